// Package examples gathers the example functions (counter, register,
// sets, cart) that the demo, the jepsen harness and users' first steps
// run; each lives in its own package.
package examples

import (
	"errors"

	"github.com/statemesh/statemesh/examples/cart"
	"github.com/statemesh/statemesh/examples/counter"
	"github.com/statemesh/statemesh/examples/register"
	"github.com/statemesh/statemesh/examples/sets"
	"github.com/statemesh/statemesh/sdk"
)

// Register registers every example on svc.
func Register(svc *sdk.Service) error {
	return errors.Join(counter.Register(svc), register.Register(svc), sets.Register(svc), cart.Register(svc))
}

package mesh

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestChooseNeighboursRegionAware(t *testing.T) {
	members := map[string]*Member{}
	for i := range 6 {
		members[fmt.Sprintf("eu%d", i)] = &Member{Name: fmt.Sprintf("eu%d", i), Region: "eu", Alive: true}
		members[fmt.Sprintf("us%d", i)] = &Member{Name: fmt.Sprintf("us%d", i), Region: "us", Alive: true}
	}
	members["eu5"].Alive = false
	self := Member{Name: "eu-self", Region: "eu"}
	rng := rand.New(rand.NewPCG(1, 2))
	current := map[string]bool{}
	for _, n := range chooseNeighbours(self, members, current, 3, 1, rng) {
		current[n] = true
	}
	var in, out int
	for n := range current {
		switch {
		case !members[n].Alive:
			t.Fatalf("chose the dead member %s", n)
		case members[n].Region == "eu":
			in++
		default:
			out++
		}
	}
	if in != 3 || out != 1 {
		t.Fatalf("chose %d in-region and %d cross-region neighbours, want 3 and 1: %v", in, out, current)
	}
	// Topping up keeps the existing neighbours and replaces only what is
	// missing.
	var gone string
	for _, n := range slices.Sorted(maps.Keys(current)) {
		if members[n].Region == "eu" {
			gone = n
			break
		}
	}
	delete(current, gone)
	added := chooseNeighbours(self, members, current, 3, 1, rng)
	if len(added) != 1 || members[added[0]].Region != "eu" || current[added[0]] {
		t.Fatalf("after losing %s the top-up added %v, want one in-region member not already a neighbour", gone, added)
	}
	// A node alone in its region takes cross-region neighbours only.
	lone := Member{Name: "ap0", Region: "ap"}
	got := chooseNeighbours(lone, members, map[string]bool{}, 3, 2, rng)
	if len(got) != 2 {
		t.Fatalf("a node alone in its region chose %v, want 2 cross-region neighbours", got)
	}
}

//go:build !jepsen_broken_ack

package mesh

// brokenAckBeforePersist is false in every real build. The build tag
// jepsen_broken_ack, used only by the jepsen harness's own test
// (jepsen/broken_test.go), sets it, so that sync durability acknowledges
// a write before it is on disk: the harness's durability checker must
// catch that.
const brokenAckBeforePersist = false

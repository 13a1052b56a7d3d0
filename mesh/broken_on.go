//go:build jepsen_broken_ack

package mesh

// brokenAckBeforePersist: see broken_off.go. This build is deliberately
// wrong; never ship it.
const brokenAckBeforePersist = true

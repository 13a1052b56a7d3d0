// Package jepsen is statemesh's Jepsen-style harness: it starts a cluster
// (Backend sim: nodes in this process, faults through internal/netfault;
// local: `statemesh node` processes on loopback; netns: the same
// processes in network namespaces, partitions by iptables), runs a
// workload against the example functions' HTTP contract while a nemesis
// injects faults, heals everything, reads the final state on every node,
// checks the history (jepsen/check) and writes a report (jepsen/report)
// under Store/<test>/<timestamp>/. Run is the entry point; `statemesh
// jepsen` is its command line.
//
// A run's guarantees under test are those of the durability mode it uses:
// runs with the kill nemesis, and the durability workload, use sync
// durability (FINDINGS.md, finding 1). Findings and their fixes are in
// FINDINGS.md.
package jepsen

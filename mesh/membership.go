package mesh

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/internal/netfault"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// ProtocolVersion is the peer protocol version this build speaks.
const ProtocolVersion = 1

// Member is what the node knows of another node.
type Member struct {
	Name        string
	Incarnation uint64
	Region      string
	Zone        string
	PeerAddr    string
	RaftAddr    string
	// RaftReplicaID is the node's Raft replica id (0: no consensus).
	RaftReplicaID uint64
	GossipAddr    string
	// Alive is false while the failure detector holds the node dead.
	Alive bool
}

// memberEvent is a membership change handed to the node's loop.
type memberEvent struct {
	m    Member
	left bool // left gracefully: forget it
}

// membership runs memberlist and turns its callbacks into events.
type membership struct {
	ml    *memberlist.Memberlist
	meta  []byte
	addrs *netfault.AddrBook

	mu     sync.Mutex
	events []memberEvent
	signal chan struct{} // size 1: events are waiting
	logf   func(msg string, args ...any)
}

func encodeMeta(c Config, incarnation uint64, peerAddr string, leaving bool) ([]byte, error) {
	b, err := proto.Marshal(&peerpb.NodeMeta{
		ProtocolVersion: ProtocolVersion, Incarnation: incarnation,
		Region: c.Region, Zone: c.Zone, PeerAddr: peerAddr, RaftAddr: c.RaftAddr, RaftReplicaId: c.RaftReplicaID, Leaving: leaving,
	})
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("mesh: node metadata of %d bytes exceeds %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMeta reads another node's metadata; it is untrusted. It also
// reports whether the node announced that it is leaving.
func decodeMeta(n *memberlist.Node) (Member, bool, error) {
	if len(n.Meta) > memberlist.MetaMaxSize {
		return Member{}, false, fmt.Errorf("metadata of %d bytes", len(n.Meta))
	}
	var pm peerpb.NodeMeta
	if err := proto.Unmarshal(n.Meta, &pm); err != nil {
		return Member{}, false, fmt.Errorf("metadata: %w", err)
	}
	if pm.ProtocolVersion != ProtocolVersion {
		return Member{}, false, fmt.Errorf("peer protocol version %d, this node speaks %d", pm.ProtocolVersion, ProtocolVersion)
	}
	if _, _, err := net.SplitHostPort(pm.PeerAddr); err != nil {
		return Member{}, false, fmt.Errorf("peer address %q: %w", pm.PeerAddr, err)
	}
	return Member{
		Name: n.Name, Incarnation: pm.Incarnation, Region: pm.Region, Zone: pm.Zone,
		PeerAddr: pm.PeerAddr, RaftAddr: pm.RaftAddr, RaftReplicaID: pm.RaftReplicaId, GossipAddr: n.Address(), Alive: true,
	}, pm.Leaving, nil
}

func startMembership(c Config, meta []byte, logger *slog.Logger) (*membership, error) {
	logf := func(msg string, args ...any) { logger.Warn(msg, args...) }
	host, portStr, err := net.SplitHostPort(c.GossipAddr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("mesh: gossip port %q: %w", portStr, err)
	}
	mb := &membership{meta: meta, signal: make(chan struct{}, 1), addrs: &netfault.AddrBook{}, logf: logf}
	mc := c.memberlistConfig()
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	mc.Delegate = mb
	mc.Events = mb
	mc.Logger = memberlistLog(logger)
	mc.LogOutput = nil
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host}, BindPort: port, Logger: mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: gossip listener on %s: %w", c.GossipAddr, err)
	}
	mc.BindPort = nt.GetAutoBindPort()
	if c.Faults != nil {
		mc.Transport = netfault.WrapMemberlist(nt, c.Name, c.Faults, mb.addrs.Lookup)
	} else {
		mc.Transport = nt
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("mesh: memberlist: %w", err)
	}
	mb.ml = ml
	mb.addrs.Set(ml.LocalNode().Address(), c.Name)
	return mb, nil
}

// join contacts the seeds, retrying for a while: seeds may be starting too.
func (mb *membership) join(seeds []string, deadline time.Duration) error {
	if len(seeds) == 0 {
		return nil
	}
	var err error
	for start := time.Now(); time.Since(start) < deadline; time.Sleep(200 * time.Millisecond) {
		var n int
		if n, err = mb.ml.Join(seeds); n > 0 {
			return nil
		}
	}
	return fmt.Errorf("mesh: no seed of %v answered: %w", seeds, err)
}

// take returns and clears the pending events.
func (mb *membership) take() []memberEvent {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	ev := mb.events
	mb.events = nil
	return ev
}

// push queues an event; down says memberlist reported the node gone.
// (memberlist's Node.State is not maintained in event callbacks: a node
// that announced its leave in its metadata left, any other one died.)
func (mb *membership) push(n *memberlist.Node, down bool) {
	m, leaving, err := decodeMeta(n)
	if err != nil {
		mb.logf("ignoring member with bad metadata", "member", n.Name, "addr", n.Address(), "err", err)
		return
	}
	mb.addrs.Set(n.Address(), n.Name)
	mb.mu.Lock()
	m.Alive = !down
	mb.events = append(mb.events, memberEvent{m: m, left: down && leaving})
	mb.mu.Unlock()
	select {
	case mb.signal <- struct{}{}:
	default:
	}
}

// memberlist.EventDelegate: calls are serialised; they must not block.
func (mb *membership) NotifyJoin(n *memberlist.Node)   { mb.push(n, false) }
func (mb *membership) NotifyUpdate(n *memberlist.Node) { mb.push(n, false) }
func (mb *membership) NotifyLeave(n *memberlist.Node)  { mb.push(n, true) }

// memberlist.Delegate: the metadata only; data travels over gRPC.
func (mb *membership) NodeMeta(limit int) []byte {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if len(mb.meta) > limit {
		return nil
	}
	return mb.meta
}
func (mb *membership) NotifyMsg([]byte)                           {}
func (mb *membership) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (mb *membership) LocalState(join bool) []byte                { return nil }
func (mb *membership) MergeRemoteState(buf []byte, join bool)     {}

// leave announces a graceful departure (in the metadata, then with
// memberlist's leave), then stops gossip.
func (mb *membership) leave(leavingMeta []byte, timeout time.Duration) error {
	mb.mu.Lock()
	mb.meta = leavingMeta
	mb.mu.Unlock()
	if err := mb.ml.UpdateNode(timeout); err != nil {
		mb.logf("could not announce the leave", "err", err)
	}
	// Leave waits until the leave message has gone out to some member; when
	// every other member is stopping at the same time nobody is left to
	// receive it. The node stops anyway (the others then see it as dead,
	// not as gone), so that is worth a log line, not a failed stop.
	if err := mb.ml.Leave(timeout); err != nil {
		mb.logf("the leave was not confirmed by any member (they may be stopping too)", "err", err)
	}
	return mb.ml.Shutdown()
}

// stop stops gossip without a leave (a crash, as the mesh sees it).
func (mb *membership) stop() error { return mb.ml.Shutdown() }

package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestBlockIsFreeAndBelowEphemeral(t *testing.T) {
	hi := ephemeralLow()
	for range 20 {
		base, err := Block(7)
		if err != nil {
			t.Fatal(err)
		}
		if base < lowest || base+7 > hi {
			t.Fatalf("block %d..%d outside [%d, %d)", base, base+6, lowest, hi)
		}
		for p := base; p < base+7; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatalf("port %d of the block: %v", p, err)
			}
			l.Close()
		}
	}
	if _, err := Block(0); err == nil {
		t.Error("Block(0) accepted")
	}
}

func TestAddrIsFreeAndFreeSeesItTaken(t *testing.T) {
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("Addr %s not bindable: %v", a, err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(a)
	p, _ := strconv.Atoi(port)
	if Free(p) {
		t.Errorf("port %d reported free while bound", p)
	}
}

package gateway

import (
	"slices"
	"testing"
	"time"
)

func TestUDPWatch(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	expect := func(n string) bool { return n != "host_7" }
	w := newUDPWatch(time.Second, 3)
	// round runs one probe round at second s: connected peers, probes
	// sent, replies from those in answering, then what is dead.
	round := func(s float64, connected, answering []string) []string {
		w.connected(connected, at(s))
		for _, n := range connected {
			w.sent(n)
		}
		for _, n := range answering {
			w.reply(n, at(s+0.01))
		}
		return w.dead(at(s+0.5), expect)
	}
	all := []string{"node_1", "node_2", "host_7"}
	for s := 0.0; s < 3; s++ {
		if d := round(s, all, []string{"node_1", "node_2"}); d != nil {
			t.Fatalf("second %v: dead %v while every node answers", s, d)
		}
	}
	// node_2 goes silent at second 3; the host never answered (and is
	// not expected to): only node_2 is repaired, after 3 silent rounds.
	var got []string
	var when float64
	for s := 3.0; s < 10 && got == nil; s++ {
		got, when = round(s, all, []string{"node_1"}), s
	}
	if !slices.Equal(got, []string{"node_2"}) || when != 5 {
		t.Fatalf("dead = %v at second %v, want [node_2] at second 5", got, when)
	}
	// Still silent: not repaired again within the hold-down.
	for s := 6.0; s < 6+udpHoldOff.Seconds()-1; s++ {
		if d := round(s, all, []string{"node_1"}); d != nil {
			t.Fatalf("second %v: repaired %v again within the hold-down", s, d)
		}
	}
	// A host that answered once is expected from then on.
	w2 := newUDPWatch(time.Second, 3)
	w = w2
	round(0, []string{"host_7"}, []string{"host_7"})
	got = nil
	for s := 1.0; s < 6 && got == nil; s++ {
		got = round(s, []string{"host_7"}, nil)
	}
	if !slices.Equal(got, []string{"host_7"}) {
		t.Fatalf("dead = %v, want the host that answered before", got)
	}
	// A peer that disconnects and reconnects starts afresh.
	w = newUDPWatch(time.Second, 3)
	round(0, []string{"node_1"}, nil)
	round(1, []string{"node_1"}, nil)
	round(2, nil, nil)
	for s := 3.0; s < 5; s++ {
		if d := round(s, []string{"node_1"}, nil); d != nil {
			t.Fatalf("second %v: %v dead although it reconnected at second 3", s, d)
		}
	}
}

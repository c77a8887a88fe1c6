package mesh

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

// EgressProperty is the registry property with which a server or node
// offers Internet egress to the testbed's slivers (design.md), e.g.
// "weight=10".
const EgressProperty = "mgmtnet.egress"

// DefaultEgressWeight is the tinc Subnet weight of an egress offer that
// gives none (tinc's own default weight).
const DefaultEgressWeight = 10

// MaxEgressWeight bounds the weight of an egress offer.
const MaxEgressWeight = 65535

// Egress is a member's offer of Internet egress: it announces
// Subnet = 0.0.0.0/0#Weight, and tinc sends sliver traffic to the
// reachable member with the lowest weight. The zero value offers nothing.
type Egress struct {
	Offered bool
	Weight  int // 0..MaxEgressWeight; lower is preferred
}

// String is the offer in EgressProperty's syntax, or "off".
func (e Egress) String() string {
	if !e.Offered {
		return "off"
	}
	return "weight=" + strconv.Itoa(e.Weight)
}

// ParseEgress parses an egress declaration: "weight=N" (N in
// 0..MaxEgressWeight), "on"/"yes"/"true" (weight DefaultEgressWeight), or
// "off"/"no"/"false" (no offer). Keys are comma-separated; unknown keys are
// an error, so a typo never silently changes where traffic goes.
func ParseEgress(s string) (Egress, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "on", "yes", "true", "1":
		return Egress{Offered: true, Weight: DefaultEgressWeight}, nil
	case "off", "no", "false", "0":
		return Egress{}, nil
	case "":
		return Egress{}, fmt.Errorf("empty egress declaration: want weight=N, on or off")
	}
	e := Egress{Offered: true, Weight: DefaultEgressWeight}
	seen := false
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return Egress{}, fmt.Errorf("egress declaration %q: %q is not key=value (want weight=N, on or off)", s, kv)
		}
		switch strings.TrimSpace(k) {
		case "weight":
			if seen {
				return Egress{}, fmt.Errorf("egress declaration %q: weight given twice", s)
			}
			seen = true
			w, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || w < 0 || w > MaxEgressWeight {
				return Egress{}, fmt.Errorf("egress declaration %q: weight %q: want an integer in 0..%d", s, v, MaxEgressWeight)
			}
			e.Weight = w
		default:
			return Egress{}, fmt.Errorf("egress declaration %q: unknown key %q (want weight)", s, k)
		}
	}
	return e, nil
}

// egressOf reads a candidate's egress offer from its properties. A bad
// declaration is a warning: the member stays, without egress.
func egressOf(kind addressing.Kind, props map[string]string) (Egress, string) {
	v, ok := props[EgressProperty]
	if !ok {
		return Egress{}, ""
	}
	e, err := ParseEgress(v)
	if err != nil {
		return Egress{}, fmt.Sprintf("property %s ignored: %v", EgressProperty, err)
	}
	if e.Offered && kind != addressing.KindServer && kind != addressing.KindNode {
		return Egress{}, fmt.Sprintf("property %s ignored: only servers and nodes can offer egress, not a %s", EgressProperty, kind)
	}
	return e, ""
}

// EgressGateways returns the members that offer egress, in tinc-name
// order.
func (t *Testbed) EgressGateways() []*Member {
	var gws []*Member
	for i := range t.members {
		if t.members[i].Egress.Offered {
			gws = append(gws, &t.members[i])
		}
	}
	return gws
}

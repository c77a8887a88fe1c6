package mesh

import (
	"errors"
	"fmt"
)

// DefaultMaxRemoveFraction is the Guard's limit when none is set.
const DefaultMaxRemoveFraction = 0.5

// ErrMassDeletion is the Guard's refusal.
var ErrMassDeletion = errors.New("refusing mass deletion")

// Guard is the one mass-deletion policy: a change that would remove more
// than MaxRemoveFraction of what exists (members of a snapshot, host files
// in a directory) is refused unless Force. A registry that answers with an
// empty or truncated list, broken or attacked, then changes nothing.
type Guard struct {
	// MaxRemoveFraction is the largest fraction of the existing entries a
	// change may remove; zero or less means DefaultMaxRemoveFraction, 1
	// allows any.
	MaxRemoveFraction float64
	// Force allows any removal (an operator's deliberate decommission).
	Force bool
}

// Fraction is the limit in force.
func (g Guard) Fraction() float64 {
	if g.MaxRemoveFraction <= 0 {
		return DefaultMaxRemoveFraction
	}
	return g.MaxRemoveFraction
}

// Check refuses, with an error wrapping ErrMassDeletion that names what,
// removing removed of existing entries when that is more than allowed.
func (g Guard) Check(what string, existing, removed int) error {
	if g.Force || existing == 0 || float64(removed) <= g.Fraction()*float64(existing) {
		return nil
	}
	return fmt.Errorf("%w: it would remove %d of %d %s, more than %.0f%%", ErrMassDeletion, removed, existing, what, 100*g.Fraction())
}

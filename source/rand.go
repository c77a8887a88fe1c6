package source

import (
	"math/rand/v2"
	"time"
)

// jitter returns d ± frac·d, uniformly.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64()))
}

func randN(d time.Duration) time.Duration { return rand.N(d) }

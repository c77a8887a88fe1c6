package main

import (
	"math"
	"testing"
)

func TestPowerFit(t *testing.T) {
	xs := []float64{100, 200, 400, 800}
	ys := make([]float64, len(xs))
	for i, x := range xs {
		ys[i] = 3e-5 * math.Pow(x, 1.8)
	}
	// Points at or below zero (noise around a flat cost) are left out.
	a, b, r2, ok := powerFit(append(xs, 1600), append(ys, -0.01))
	if !ok || math.Abs(a-3e-5)/3e-5 > 1e-9 || math.Abs(b-1.8) > 1e-9 || math.Abs(r2-1) > 1e-9 {
		t.Errorf("powerFit = %g, %g, %g, %v; want 3e-5, 1.8, 1, true", a, b, r2, ok)
	}
	if _, _, _, ok := powerFit([]float64{100, 200}, []float64{1, 0}); ok {
		t.Error("powerFit with one usable point: ok, want not ok")
	}
}

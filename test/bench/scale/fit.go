package main

import "math"

// powerFit fits y = a·x^b by least squares on log y against log x, over
// the points with x and y above zero, and returns a, b and the R² of the
// fit in log space. ok is false with fewer than two such points.
func powerFit(xs, ys []float64) (a, b, r2 float64, ok bool) {
	var lx, ly []float64
	for i := range xs {
		if xs[i] > 0 && ys[i] > 0 {
			lx = append(lx, math.Log(xs[i]))
			ly = append(ly, math.Log(ys[i]))
		}
	}
	n := float64(len(lx))
	if n < 2 {
		return 0, 0, 0, false
	}
	var sx, sy, sxx, sxy float64
	for i := range lx {
		sx += lx[i]
		sy += ly[i]
		sxx += lx[i] * lx[i]
		sxy += lx[i] * ly[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, 0, 0, false
	}
	b = (n*sxy - sx*sy) / den
	la := (sy - b*sx) / n
	var ssRes, ssTot float64
	mean := sy / n
	for i := range lx {
		e := ly[i] - (la + b*lx[i])
		ssRes += e * e
		ssTot += (ly[i] - mean) * (ly[i] - mean)
	}
	r2 = 1
	if ssTot > 0 {
		r2 = 1 - ssRes/ssTot
	}
	return math.Exp(la), b, r2, true
}

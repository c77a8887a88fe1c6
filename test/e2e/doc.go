// Package e2e holds the end-to-end tests: the mgmtnet binary against a real
// registry server, real tincd in network namespaces and real clients (ping,
// dig, curl). They need root, tinc and iproute2; "make test" installs them.
package e2e

//go:build mips || mipsle || mips64 || mips64le

package registrydb

// sqliteBuilt: modernc.org/sqlite does not build for MIPS; a node's build
// reaches PostgreSQL only (and a node serves no registry anyway).
const sqliteBuilt = false

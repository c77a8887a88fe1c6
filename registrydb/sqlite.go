//go:build !mips && !mipsle && !mips64 && !mips64le

package registrydb

import _ "modernc.org/sqlite" // database/sql driver "sqlite"

// sqliteBuilt reports whether this build has the SQLite driver: pure Go,
// but not for every architecture (not for MIPS, which small nodes run).
const sqliteBuilt = true

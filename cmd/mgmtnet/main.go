// Command mgmtnet runs the management network of a CONFINE-style
// community-network testbed. All of its behaviour lives in the library
// packages; this file only hands the command line to internal/cli.
package main

import "github.com/confine-project/mgmtnet/cmd/mgmtnet/internal/cli"

func main() { cli.Main() }

//go:build nodb || mips || mipsle || mips64 || mips64le

package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// errNoDB is the answer of a build without the registry database (a
// node's: tag nodb, or MIPS).
var errNoDB = errors.New("this mgmtnet was built without the registry database (a node build); serve a testbed file with --testbed FILE")

func serveFromDB(context.Context, string, *slog.Logger) (*registry.File, dbServer, error) {
	return nil, nil, errNoDB
}

func registryImport(context.Context, Env, string, string) error { return errNoDB }

func registryExport(context.Context, Env, string, string) error { return errNoDB }

func registryLog(context.Context, Env, string, int, bool) error { return errNoDB }

func runRegistryMember(context.Context, Env, string, []string) error { return errNoDB }

func registryInit(context.Context, Env, string, string) error { return errNoDB }

func registryBackup(context.Context, Env, string, string) error { return errNoDB }

func runRegistryToken(context.Context, Env, []string) error { return errNoDB }

func runRegistryInvite(context.Context, Env, []string) error { return errNoDB }

func runRegistryUser(context.Context, Env, []string) error { return errNoDB }

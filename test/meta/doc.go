// Package meta holds repository-wide tests: formatting, package
// documentation and the dependency rules of docs/style.md. It has no code
// of its own; its tests run with "go test ./test/meta/".
package meta

// Package kit is the one source of the lines every function needs the same way: settings
// parsing, JSON errors, the lifecycle, token checking through validate, JWT key loading, the
// job states and the GridFS chunk writer. Functions are independent Go modules built alone by
// func, so they cannot import it: `go generate ./...` copies the files each function needs
// (see the table in generate.go) into functions/<name>/kit_<file>.go, and TestCopiesAreFresh
// fails when a copy is stale. Edit here, never the copies.
//
// Only the files named in the table are copied; this file, generate.go and the tests are not.
package kit

//go:generate go run ./gen

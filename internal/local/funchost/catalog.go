// Package functions names the seven functions and makes their instances, as
// each one's New() does in the binary `func build` makes. It imports nothing
// else, so a host that needs only the functions links only them.
package funchost

import (
	"fmt"
	"strings"

	convert "mp3converter/functions/convert"
	download "mp3converter/functions/download"
	login "mp3converter/functions/login"
	notify "mp3converter/functions/notify"
	upload "mp3converter/functions/upload"
	validate "mp3converter/functions/validate"
	web "mp3converter/functions/web"
)

// Names lists the functions in the order the local stack starts them.
// web, the public entry point, comes last: it passes requests on to the others.
var Names = []string{"validate", "login", "upload", "download", "convert", "notify", "web"}

// New returns a new instance of the named function.
func New(name string) (any, error) {
	switch name {
	case "login":
		return login.New(), nil
	case "validate":
		return validate.New(), nil
	case "upload":
		return upload.New(), nil
	case "download":
		return download.New(), nil
	case "convert":
		return convert.New(), nil
	case "notify":
		return notify.New(), nil
	case "web":
		return web.New(), nil
	}
	return nil, fmt.Errorf("no function %q (there are %s)", name, strings.Join(Names, ", "))
}

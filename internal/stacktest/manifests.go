package stacktest

import (
	"io/fs"
	"regexp"
	"strconv"
	"testing/fstest"

	"mp3converter/knative"
)

// Rewrite changes the text of one file of knative/ (path as in knative.Manifests).
type Rewrite func(path, text string) (string, error)

// Manifests is knative/ with every file passed through the rewrites, for
// Options.Manifests.
func Manifests(rewrites ...Rewrite) (fs.FS, error) {
	out := fstest.MapFS{}
	err := fs.WalkDir(knative.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(knative.Manifests, path)
		if err != nil {
			return err
		}
		text := string(data)
		for _, rewrite := range rewrites {
			if text, err = rewrite(path, text); err != nil {
				return err
			}
		}
		out[path] = &fstest.MapFile{Data: []byte(text)}
		return nil
	})
	return out, err
}

var (
	backoffDelay  = regexp.MustCompile(`backoffDelay: \S+`)
	backoffPolicy = regexp.MustCompile(`backoffPolicy: \S+`)
	retry         = regexp.MustCompile(`retry: \d+`)
)

// Retries sets every delivery of the Broker and the Triggers to retries
// retries of backoffDelay (an ISO-8601 duration), with backoffPolicy
// (linear or exponential; "" keeps each one's), so that retry and
// dead-letter paths take as long as a test can wait.
func Retries(delay, policy string, retries int) Rewrite {
	return func(_, text string) (string, error) {
		text = backoffDelay.ReplaceAllString(text, "backoffDelay: "+delay)
		if policy != "" {
			text = backoffPolicy.ReplaceAllString(text, "backoffPolicy: "+policy)
		}
		return retry.ReplaceAllString(text, "retry: "+strconv.Itoa(retries)), nil
	}
}

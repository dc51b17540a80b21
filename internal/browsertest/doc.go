// Package browsertest drives the web app (functions/web) in Debian's Chromium, headless, against
// the real local stack (internal/stacktest): sign-in, uploads through the file input, the job's
// states, the Download link saving the MP3 in the browser's download folder, "Your files",
// the Users view. It holds tests only. Chromium is installed by `make test` (or `apt-get install
// chromium`); where it is missing the tests are skipped with a message.
//
// MP3C_SCREENSHOTS=<dir> (`make screenshots`: docs/) also writes PNGs of the sign-in page, an upload
// in progress and the file list.
package browsertest

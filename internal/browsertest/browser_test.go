package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"mp3converter/internal/stacktest"
)

const (
	adminEmail    = stacktest.AdminEmail
	adminPassword = stacktest.AdminPassword
	testBound     = 5 * time.Minute // the browser's whole run (about 30 s on an idle machine)
)

// TestWebApp runs the app's stories in one stack, each in a browser tab of its own (a tab
// is a session: the token lives in sessionStorage).
func TestWebApp(t *testing.T) {
	chromium := findChromium(t)
	// A request the network cut off without closing its connection holds its upload until
	// UPLOAD_IDLE_TIMEOUT: short here, so that the offline story resumes soon.
	s := stacktest.Start(t, stacktest.Options{Env: map[string]string{"UPLOAD_IDLE_TIMEOUT": "5s"}})
	browser := startBrowser(t, chromium)
	shots := os.Getenv("MP3C_SCREENSHOTS")

	t.Run("a wrong password shows a message", func(t *testing.T) {
		tab := newTab(t, browser)
		run(t, tab, chromedp.Navigate(s.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#signin-form")))
		if shots != "" {
			screenshot(t, tab, filepath.Join(shots, "web-signin.png"))
		}
		run(t, tab,
			chromedp.SendKeys(chromedp.CSS("#email"), adminEmail),
			chromedp.SendKeys(chromedp.CSS("#password"), "not-the-password"),
			chromedp.Click(chromedp.CSS("#signin-button")))
		run(t, tab, chromedp.WaitVisible(chromedp.CSS("#signin-message")))
		if msg := text(t, tab, "#signin-message"); msg != "Wrong email or password." {
			t.Errorf("message %q", msg)
		}
		if visible(t, tab, "#app-view") {
			t.Error("the app is shown after a wrong password")
		}
	})

	video := makeVideo(t, "holiday clip.mp4")
	t.Run("an upload shows its progress and its job reaches done", func(t *testing.T) {
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, adminEmail, adminPassword)
		// Slow the upload down, so its progress is seen between 0 and 100%.
		throttle(t, tab, 64<<10)
		run(t, tab, chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{video}))
		run(t, tab, waitFor(`(() => { const r = document.querySelector("#uploads li"); const p = r && r.querySelector("progress");
			return r && r.dataset.state === "uploading" && p.value > 0 && p.value < 100 && /\d+% · .* of .* · .*\/s/.test(r.querySelector(".detail").textContent); })()`))
		if shots != "" { // a figure a person notices
			run(t, tab, waitFor(`document.querySelector("#uploads li progress").value >= 30`))
			screenshot(t, tab, filepath.Join(shots, "web-upload.png"))
		}
		throttle(t, tab, -1)
		run(t, tab, waitFor(`document.querySelector("#uploads li").dataset.state === "done"`))
		// The Download button is a plain (signed) link: the browser downloads the MP3 itself.
		href := attr(t, tab, "#uploads li a.download", "href")
		if !strings.Contains(href, "/download?") || !strings.Contains(href, "sig=") {
			t.Errorf("Download link %q, want a signed /download link", href)
		}
		mp3 := download(t, tab, "#uploads li a.download")
		if filepath.Base(mp3) != "holiday clip.mp3" {
			t.Errorf("downloaded as %q, want the video's name with .mp3", filepath.Base(mp3))
		}
		if codec, seconds := stacktest.Probe(t, mp3); codec != "mp3" || seconds < 5.5 || seconds > 6.5 {
			t.Errorf("downloaded %s of %.2f s, want mp3 of about 6 s", codec, seconds)
		}
		run(t, tab, waitFor(`[...document.querySelectorAll("#files li .name")].some(e => e.textContent === "holiday clip.mp4")`))
		if shots != "" {
			screenshot(t, tab, filepath.Join(shots, "web-files.png"))
		}
		if n := evalInt(t, tab, `document.documentElement.scrollWidth - window.innerWidth`); n > 0 {
			t.Errorf("the page is %d px wider than the window", n)
		}
	})

	t.Run("an upload cut off by going offline finishes after coming back, without starting over", func(t *testing.T) {
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, adminEmail, adminPassword)
		// The tus requests the page sends, and the answers to its PATCHes.
		var mu sync.Mutex
		var creations int
		patchFrom := map[network.RequestID]string{} // PATCH -> its Upload-Offset
		var patches []network.RequestID
		answered := map[network.RequestID]int64{} // PATCH -> its status
		if err := chromedp.Listen(tab, func(ev any) {
			mu.Lock()
			defer mu.Unlock()
			switch e := ev.(type) {
			case *network.EventRequestWillBeSent:
				if !strings.Contains(e.Request.URL, "/upload/") {
					return
				}
				switch e.Request.Method {
				case "POST":
					creations++
				case "PATCH":
					patchFrom[e.RequestID] = fmt.Sprint(e.Request.Headers["Upload-Offset"])
					patches = append(patches, e.RequestID)
				}
			case *network.EventResponseReceived:
				if _, ok := patchFrom[e.RequestID]; ok {
					answered[e.RequestID] = e.Response.Status
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		// About 6 MB at 256 KiB/s: the network is cut while most of it is still to go.
		resumed := filepath.Join(t.TempDir(), "cut off.mp4")
		stacktest.FFmpeg(t, resumed, "-f", "lavfi", "-i", "testsrc2=duration=6:size=640x360:rate=25",
			"-f", "lavfi", "-i", "sine=frequency=440:duration=6",
			"-c:v", "libx264", "-preset", "ultrafast", "-b:v", "8000k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
		emulateNetwork(t, tab, false, 256<<10)
		run(t, tab, chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{resumed}),
			waitFor(`document.querySelector("#uploads li progress")?.value >= 20`))
		emulateNetwork(t, tab, true, 256<<10)
		run(t, tab, waitFor(`/Offline/.test(document.querySelector("#uploads li .detail").textContent)`))
		emulateNetwork(t, tab, false, -1)
		back := time.Now()
		// The server may hold the cut request until UPLOAD_IDLE_TIMEOUT when the browser leaves
		// its connection open; the page retries meanwhile.
		if err := chromedp.Do(tab, waitFor(`document.querySelector("#uploads li").dataset.state === "done"`, chromedp.WithPollingTimeout(2*time.Minute))); err != nil {
			t.Fatalf("not done: %v; the row says %q %q", err, attr(t, tab, "#uploads li", "data-state"), text(t, tab, "#uploads li .detail"))
		}

		// One upload (one creation); after the cut, no PATCH from 0 was taken: the ones sent
		// before the server had recorded the cut one were refused (423, 409), and the rest
		// went from the server's offset.
		mu.Lock() // not held across a CDP call: the listener would block the tab's events
		var seen []string
		resumedFrom := ""
		for i, id := range patches {
			seen = append(seen, fmt.Sprintf("%s:%d", patchFrom[id], answered[id]))
			if i > 0 && answered[id] == 204 {
				resumedFrom = patchFrom[id]
			}
		}
		first := ""
		if len(patches) > 0 {
			first = patchFrom[patches[0]]
		}
		nCreations, nPatches := creations, len(patches)
		mu.Unlock()
		if nCreations != 1 || nPatches < 2 || first != "0" || resumedFrom == "" || resumedFrom == "0" {
			t.Fatalf("%d creations; PATCHes (offset:status) %v: want one creation, the cut PATCH, and a resume from the server's offset", nCreations, seen)
		}
		t.Logf("PATCHes (offset:status) %v; done %s after coming back", seen, time.Since(back).Round(time.Second))
		if n := evalInt(t, tab, `Object.keys(localStorage).filter(k => k.startsWith("mp3converter.upload:")).length`); n != 0 {
			t.Errorf("%d upload URLs left in localStorage after the upload finished", n)
		}
	})

	t.Run("a text file is refused with a readable message", func(t *testing.T) {
		notes := filepath.Join(t.TempDir(), "notes.txt")
		os.WriteFile(notes, []byte("just some text, not a video\n"), 0o644)
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, adminEmail, adminPassword)
		run(t, tab, chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{notes}),
			waitFor(`document.querySelector("#uploads li")?.dataset.state === "failed"`))
		if msg := text(t, tab, "#uploads li .detail"); !strings.HasPrefix(msg, "This is not a video with sound") {
			t.Errorf("message %q", msg)
		}
	})

	userEmail := "user-" + stacktest.RandomHex(3) + "@example.com"
	s.AddUser(t, userEmail)
	t.Run("another user's session does not list the first user's files", func(t *testing.T) {
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, userEmail, stacktest.UserPassword)
		run(t, tab, chromedp.WaitVisible(chromedp.CSS("#files-empty")))
		if n := evalInt(t, tab, `document.querySelectorAll("#files li").length`); n != 0 {
			t.Errorf("%d files listed for a new user", n)
		}
		if visible(t, tab, "#tabs") {
			t.Error("a user who is not an admin sees the Users tab")
		}
		// A phone-sized screen: nothing wider than the window.
		run(t, tab, chromedp.EmulateViewport(390, 844), waitFor(`window.innerWidth === 390`))
		if n := evalInt(t, tab, `document.documentElement.scrollWidth - window.innerWidth`); n > 0 {
			t.Errorf("on a phone-sized screen the page is %d px wider than the window", n)
		}
	})

	t.Run("an admin lists, adds, resets and deletes users", func(t *testing.T) {
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, adminEmail, adminPassword)
		added := "added-" + stacktest.RandomHex(3) + "@example.com"
		row := `#users li[data-email="` + added + `"]`
		run(t, tab,
			chromedp.Click(chromedp.CSS("#tab-users")),
			chromedp.WaitVisible(chromedp.CSS(`#users li[data-email="`+userEmail+`"]`)),
			chromedp.SendKeys(chromedp.CSS("#new-email"), added),
			chromedp.SendKeys(chromedp.CSS("#new-password"), "first-password-1"),
			chromedp.Click(chromedp.CSS("#user-add button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS(row)),
			chromedp.Click(chromedp.CSS(row+" button.secondary")),
			chromedp.SendKeys(chromedp.CSS(row+" form input"), "second-password-2"),
			chromedp.Click(chromedp.CSS(row+" form button")),
			waitFor(`document.querySelector("#user-message").textContent === "The password of `+added+` was changed."`))
		if _, err := s.Client("").Login(context.Background(), added, "second-password-2"); err != nil {
			t.Errorf("the reset password does not sign in: %v", err)
		}
		run(t, tab,
			chromedp.Click(chromedp.CSS(row+" button.danger")),
			chromedp.Click(chromedp.CSS(row+" button.danger")), // "Really delete?"
			chromedp.WaitNotPresent(chromedp.CSS(row)))
		if _, err := s.Client("").Login(context.Background(), added, "second-password-2"); err == nil {
			t.Error("a deleted user still signs in")
		}
	})

	t.Run("a refused token brings the sign-in back with a message", func(t *testing.T) {
		tab := newTab(t, browser)
		signIn(t, tab, s.URL, adminEmail, adminPassword)
		// The token's signature no longer matches: validate refuses it, as an expired one.
		run(t, tab, chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem("mp3converter.token", sessionStorage.getItem("mp3converter.token").slice(0, -4) + "AAAA")`),
			chromedp.Reload(),
			chromedp.WaitVisible(chromedp.CSS("#signin-message")))
		if msg := text(t, tab, "#signin-message"); !strings.Contains(msg, "signed out") {
			t.Errorf("message %q", msg)
		}
	})
}

// makeVideo generates a 6-second clip with a 440 Hz tone (about 1 MB: an upload slowed to
// 64 KiB/s shows its progress).
func makeVideo(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("ffmpeg", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=duration=6:size=640x360:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=6",
		"-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1200k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// ---- the browser ----

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Skip("chromium is not installed: `make test` installs it (or: sudo apt-get install chromium); the browser tests are skipped")
	return ""
}

// startBrowser starts one headless Chromium with a new empty profile, for the whole test.
func startBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.Flag("no-sandbox", true), // tests run as root in CI
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 760),
	}
	bound, cancelBound := context.WithTimeout(context.Background(), testBound)
	alloc, cancelAlloc := chromedp.NewExecAllocator(bound, opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	if err := chromedp.Do(browser); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancelBound() })
	return browser
}

// newTab opens a tab of its own (its own sessionStorage: its own session).
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	return tab
}

func run(t *testing.T, tab context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab, actions...); err != nil {
		t.Fatal(err)
	}
}

func result[T any](t *testing.T, tab context.Context, action chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(tab, action)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func signIn(t *testing.T, tab context.Context, url, email, password string) {
	t.Helper()
	run(t, tab,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#app-view")))
}

// waitFor waits until a JavaScript expression about the page is true.
func waitFor(expression string, opts ...chromedp.PollOption) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](expression, append([]chromedp.PollOption{chromedp.WithPollingInterval(50 * time.Millisecond)}, opts...)...)
	return func(ctx context.Context, target *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, target)
		return chromedp.Void{}, err
	}
}

// throttle limits the tab's uploads to bytesPerSecond (-1: no limit).
func throttle(t *testing.T, tab context.Context, bytesPerSecond float64) {
	t.Helper()
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	_, err := chromedp.Call(tab, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{UploadThroughput: bytesPerSecond, DownloadThroughput: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// emulateNetwork sets the tab's network with Network.emulateNetworkConditions (deprecated for
// emulateNetworkConditionsByRule, which leaves navigator.onLine alone): offline, new requests
// fail and the page hears "offline" (Chromium lets a request in flight go on: the app aborts
// its upload itself); uploads limited to bytesPerSecond (-1: no limit).
func emulateNetwork(t *testing.T, tab context.Context, offline bool, bytesPerSecond float64) {
	t.Helper()
	type conditions struct {
		Offline            bool    `json:"offline"`
		Latency            float64 `json:"latency"`
		DownloadThroughput float64 `json:"downloadThroughput"`
		UploadThroughput   float64 `json:"uploadThroughput"`
	}
	emulate := cdp.Command[conditions, cdp.Empty]{Method: "Network.emulateNetworkConditions"}
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, emulate, conditions{Offline: offline, DownloadThroughput: -1, UploadThroughput: bytesPerSecond}); err != nil {
		t.Fatal(err)
	}
}

func text(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	return strings.TrimSpace(result(t, tab, chromedp.Text(chromedp.CSS(sel))))
}

func attr(t *testing.T, tab context.Context, sel, name string) string {
	t.Helper()
	return result(t, tab, chromedp.AttributeValue(chromedp.CSS(sel), name)).Value
}

func visible(t *testing.T, tab context.Context, sel string) bool {
	t.Helper()
	return result(t, tab, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.offsetParent !== null; })()`, sel)))
}

func evalInt(t *testing.T, tab context.Context, expression string) int {
	t.Helper()
	return result(t, tab, chromedp.Evaluate[int](expression))
}

// download clicks the link sel and returns the path of the file the browser saved.
func download(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	dir := t.TempDir()
	completed := make(chan string, 1)
	err := chromedp.ListenBrowser(tab, func(ev any) {
		if e, ok := ev.(*browser.EventDownloadProgress); ok && e.State == browser.DownloadProgressStateCompleted {
			select {
			case completed <- e.FilePath:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	events := true
	if _, err := chromedp.CallBrowser(tab, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir, EventsEnabled: &events,
	}); err != nil {
		t.Fatal(err)
	}
	run(t, tab, chromedp.Click(chromedp.CSS(sel)))
	select {
	case path := <-completed:
		if path == "" {
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Fatalf("download folder holds %d files", len(entries))
			}
			path = filepath.Join(dir, entries[0].Name())
		}
		return path
	case <-tab.Done():
		t.Fatal("the download did not complete before the test's bound")
	}
	return ""
}

func screenshot(t *testing.T, tab context.Context, path string) {
	t.Helper()
	if err := os.WriteFile(path, result(t, tab, chromedp.FullScreenshot(100)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

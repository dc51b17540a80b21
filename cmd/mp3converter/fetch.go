package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"mp3converter/internal/client"
)

// maxStalls is how many times in a row a download may break (or fail to
// start) without receiving a byte before fetch gives up.
const maxStalls = 5

// destination names the file for an MP3 once the server's first answer
// suggests a name. explicit means the user chose it (-o): it is never
// replaced by another name.
type destination func(suggested string) (path string, explicit bool)

// errConflict is an explicit destination that exists with other contents.
var errConflict = errors.New("already exists with other contents")

// fetch downloads the MP3 fid into a .part file beside its destination,
// resuming with Range and If-Range when the transfer breaks, then moves it
// into place without replacing a different file. It returns the path written.
func (a *app) fetch(ctx context.Context, c *client.Client, fid string, dest destination, tr tracker) (string, error) {
	d, err := a.openDownload(ctx, c, fid, 0, "")
	if err != nil {
		return "", err
	}
	path, explicit := dest(d.Filename)
	if explicit && d.Size >= 0 {
		// Refuse before downloading when the sizes already tell the files apart.
		if st, err := os.Stat(path); err == nil && st.Size() != d.Size {
			d.Body.Close()
			return "", fmt.Errorf("%s %w: remove it or choose another name with -o", path, errConflict)
		}
	}
	part, err := createPart(path)
	if err != nil {
		d.Body.Close()
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			part.Close()
			os.Remove(part.Name())
		}
	}()

	tr.phase("downloading", d.Size)
	var written int64
	for stalls := 0; ; {
		n, err := io.Copy(&progressWriter{w: part, tr: tr}, d.Body)
		d.Body.Close()
		written += n
		if n > 0 {
			stalls = 0
		}
		if err == nil && (d.Size < 0 || written == d.Size) {
			break
		}
		if err == nil {
			err = fmt.Errorf("got %d of %d bytes", written, d.Size)
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if errors.Is(err, io.ErrShortWrite) || isLocalWriteError(err) {
			return "", fmt.Errorf("writing %s: %w", part.Name(), err)
		}
		if stalls++; stalls > maxStalls {
			return "", fmt.Errorf("the download keeps breaking (%v)", err)
		}
		// Resume from what we have, if the server still has the same file;
		// otherwise it answers with the whole file and we start over.
		validator := d.ETag
		if validator == "" {
			validator = d.LastModified
		}
		from := written
		if validator == "" {
			from = 0
		}
		if d, err = a.openDownload(ctx, c, fid, from, validator); err != nil {
			return "", err
		}
		if d.Offset != written {
			if d.Offset != 0 {
				d.Body.Close()
				return "", fmt.Errorf("asked to resume at byte %d, the server sent from %d", written, d.Offset)
			}
			if _, err := part.Seek(0, io.SeekStart); err != nil {
				d.Body.Close()
				return "", err
			}
			if err := part.Truncate(0); err != nil {
				d.Body.Close()
				return "", err
			}
			written = 0
			tr.restart()
		}
	}
	if err := part.Close(); err != nil {
		return "", err
	}
	final, err := place(part.Name(), path, explicit)
	if err != nil {
		return "", err
	}
	ok = true
	return final, nil
}

// openDownload opens the download, waiting and trying again (bounded) while
// the server is unreachable or answers 502/503/504.
func (a *app) openDownload(ctx context.Context, c *client.Client, fid string, from int64, validator string) (*client.Download, error) {
	wait := a.interval()
	for attempt := 1; ; attempt++ {
		d, err := c.OpenDownload(ctx, fid, from, validator)
		if err == nil || !client.IsTransient(err) || attempt > maxStalls {
			return d, explainDownload(err, fid)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, err
		}
		wait = min(wait*2, maxPoll)
	}
}

func explainDownload(err error, fid string) error {
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return fmt.Errorf("no MP3 %s here (not converted yet, or not yours): `mp3converter status %s` tells", fid, fid)
	}
	return explain(err)
}

// isLocalWriteError tells a failure to write the file from one to read the network.
func isLocalWriteError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe)
}

// createPart creates path.part, or path.1.part, path.2.part... when that is
// taken (another download of the same name, or a leftover of a killed one).
func createPart(path string) (*os.File, error) {
	for i := 0; i < 100; i++ {
		name := path + ".part"
		if i > 0 {
			name = fmt.Sprintf("%s.%d.part", path, i)
		}
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("%s.part and 99 numbered names beside it are taken", path)
}

// place moves part to path without replacing anything. An identical file
// already there is kept (and part dropped). A different one: an explicit
// path fails; otherwise the next free "name (N).mp3" is taken.
func place(part, path string, explicit bool) (string, error) {
	for i := 0; i < 1000; i++ {
		candidate := numbered(path, i)
		err := os.Link(part, candidate) // atomic: fails if candidate exists
		if err != nil && !errors.Is(err, fs.ErrExist) {
			// No hard links here (some file systems): check, then rename.
			if _, serr := os.Lstat(candidate); errors.Is(serr, fs.ErrNotExist) {
				if err := os.Rename(part, candidate); err != nil {
					return "", err
				}
				return candidate, nil
			}
			err = fs.ErrExist
		}
		if err == nil {
			os.Remove(part)
			return candidate, nil
		}
		if same, _ := sameContents(part, candidate); same {
			os.Remove(part)
			return candidate, nil
		}
		if explicit {
			return "", fmt.Errorf("%s %w: remove it or choose another name with -o", path, errConflict)
		}
	}
	return "", fmt.Errorf("%s and 999 numbered names beside it are taken", path)
}

// numbered is path for 0, then "dir/name (1).ext", "dir/name (2).ext", ...
func numbered(path string, i int) string {
	if i == 0 {
		return path
	}
	ext := filepath.Ext(path)
	return fmt.Sprintf("%s (%d)%s", strings.TrimSuffix(path, ext), i, ext)
}

// sameContents compares two files byte for byte.
func sameContents(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil || !sb.Mode().IsRegular() || sa.Size() != sb.Size() {
		return false, err
	}
	ra, rb := bufio.NewReaderSize(fa, 64<<10), bufio.NewReaderSize(fb, 64<<10)
	bufA, bufB := make([]byte, 32<<10), make([]byte, 32<<10)
	for {
		na, errA := io.ReadFull(ra, bufA)
		nb, errB := io.ReadFull(rb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == errA, nil
		}
		if errA != nil {
			return false, errA
		}
		if errB != nil {
			return false, errB
		}
	}
}

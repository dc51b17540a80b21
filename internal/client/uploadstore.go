package client

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// SavedUpload is a resumable upload `mp3converter convert` started, kept in the user's config
// dir (uploads.json beside tokens.json) so that converting the same file again resumes it.
// The file is the same while its path, size and modification time are.
type SavedUpload struct {
	Server  string    `json:"server"`
	Path    string    `json:"path"` // absolute
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mod_time"`
	URL     string    `json:"upload_url"`
}

func (u SavedUpload) key() string { return u.Server + " " + u.Path }

// uploadsMu serialises the read-modify-write of uploads.json within the process (convert
// uploads several files at once).
var uploadsMu sync.Mutex

func uploadsPath() (string, error) {
	tokens, err := TokenPath()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(tokens), "uploads.json"), nil
}

// FindUpload returns the saved upload of this very file on server, if any.
func FindUpload(server, path string, size int64, modTime time.Time) (SavedUpload, bool) {
	uploadsMu.Lock()
	defer uploadsMu.Unlock()
	all, _ := loadUploads()
	u, ok := all[SavedUpload{Server: server, Path: path}.key()]
	if !ok || u.Size != size || !u.ModTime.Equal(modTime) {
		return SavedUpload{}, false
	}
	return u, true
}

// SaveUpload remembers u (0600 in the config dir).
func SaveUpload(u SavedUpload) error {
	return updateUploads(func(all map[string]SavedUpload) { all[u.key()] = u })
}

// ForgetUpload drops the saved upload of path on server: it finished, or cannot resume.
func ForgetUpload(server, path string) error {
	return updateUploads(func(all map[string]SavedUpload) { delete(all, SavedUpload{Server: server, Path: path}.key()) })
}

func updateUploads(change func(map[string]SavedUpload)) error {
	uploadsMu.Lock()
	defer uploadsMu.Unlock()
	all, err := loadUploads()
	if err != nil {
		all = map[string]SavedUpload{} // unreadable: start afresh rather than never resume again
	}
	change(all)
	path, err := uploadsPath()
	if err != nil {
		return err
	}
	return writePrivateJSON(path, all)
}

func loadUploads() (map[string]SavedUpload, error) {
	all := map[string]SavedUpload{}
	path, err := uploadsPath()
	if err != nil {
		return all, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return all, nil
		}
		return all, err
	}
	return all, json.Unmarshal(data, &all)
}

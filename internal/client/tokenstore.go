package client

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// SavedToken is what `mp3converter login` keeps in the user's config dir.
type SavedToken struct {
	Server    string    `json:"server"`
	Email     string    `json:"email"`
	Token     string    `json:"access_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ErrNoToken means nobody has logged in to that server from this account.
var ErrNoToken = errors.New("not logged in: run mp3converter login")

// TokenPath is where tokens are kept: $MP3C_CONFIG_DIR or the user's config dir.
func TokenPath() (string, error) {
	dir := os.Getenv("MP3C_CONFIG_DIR")
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(base, "mp3converter")
	}
	return filepath.Join(dir, "tokens.json"), nil
}

// SaveToken stores t for its server, readable by the user only (0600).
func SaveToken(t SavedToken) error {
	path, err := TokenPath()
	if err != nil {
		return err
	}
	all, err := loadTokens(path)
	if err != nil {
		return err
	}
	all[t.Server] = t
	return writePrivateJSON(path, all)
}

// writePrivateJSON writes v as indented JSON to path, readable by the user only (0600, in a
// 0700 folder), through a temporary file renamed into place so that a crash never leaves
// half a file.
func writePrivateJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadToken returns the token saved for server, ErrNoToken if there is none.
func LoadToken(server string) (SavedToken, error) {
	path, err := TokenPath()
	if err != nil {
		return SavedToken{}, err
	}
	all, err := loadTokens(path)
	if err != nil {
		return SavedToken{}, err
	}
	t, ok := all[server]
	if !ok {
		return SavedToken{}, ErrNoToken
	}
	return t, nil
}

func loadTokens(path string) (map[string]SavedToken, error) {
	all := map[string]SavedToken{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, err
	}
	return all, json.Unmarshal(data, &all)
}

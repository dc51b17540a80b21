package stack

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ensureLinkSecret gives download (and notify) the key of the signed download
// links: LINK_SECRET when configured, else one generated once into the data
// dir (mode 0600) and kept there, so links in sent emails keep working after
// a restart.
func ensureLinkSecret(dataDir string, env map[string]string) error {
	if env["LINK_SECRET"] != "" {
		return nil
	}
	path := filepath.Join(dataDir, "link-secret")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		b = []byte(base64.RawURLEncoding.EncodeToString(key))
		err = os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("link secret: %w", err)
	}
	env["LINK_SECRET"] = string(b)
	return nil
}

// ensureSigningKey gives login a private key and validate only the public
// one. JWT_SECRET (HS256) needs nothing. A configured JWT_PRIVATE_KEY(_FILE)
// is used as is; otherwise an RS256 key is generated once into the data dir
// (mode 0600) and kept there. The public key is written beside it unless
// JWT_PUBLIC_KEY(_FILE) is configured.
func ensureSigningKey(dataDir string, env map[string]string) error {
	if env["JWT_SECRET"] != "" {
		return nil
	}
	var der []byte
	var err error
	switch {
	case env["JWT_PRIVATE_KEY"] != "":
		der, err = decodePEM([]byte(env["JWT_PRIVATE_KEY"]))
	case env["JWT_PRIVATE_KEY_FILE"] != "":
		der, err = readPEM(env["JWT_PRIVATE_KEY_FILE"])
	default:
		path := filepath.Join(dataDir, "jwt-private.pem")
		if der, err = readPEM(path); errors.Is(err, fs.ErrNotExist) {
			der, err = generateKey(path)
		}
		env["JWT_PRIVATE_KEY_FILE"] = path
	}
	if err != nil {
		return fmt.Errorf("JWT signing key: %w", err)
	}
	if env["JWT_PUBLIC_KEY"] != "" || env["JWT_PUBLIC_KEY_FILE"] != "" {
		return nil
	}
	key, err := parseRSAPrivateKey(der)
	if err != nil {
		return fmt.Errorf("JWT signing key: %w", err)
	}
	public, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	publicPath := filepath.Join(dataDir, "jwt-public.pem")
	if err := os.WriteFile(publicPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: public}), 0o644); err != nil {
		return err
	}
	env["JWT_PUBLIC_KEY_FILE"] = publicPath
	return nil
}

func parseRSAPrivateKey(der []byte) (*rsa.PrivateKey, error) {
	if key, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return key, nil
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rsaKey, nil
}

func readPEM(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodePEM(data)
}

func decodePEM(data []byte) ([]byte, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return block.Bytes, nil
}

func generateKey(path string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// O_EXCL: two stacks starting at once must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	return der, f.Close()
}

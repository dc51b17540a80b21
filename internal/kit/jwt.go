package kit

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The auth contract that login signs and validate checks.
const (
	realm          = "mp3converter"
	maxTokenLen    = 8 << 10
	minRSABits     = 2048
	minSecretBytes = 32
)

// tokenClaims are the claims of the auth contract. sub is the user's id (files and jobs
// belong to it, not to the address); username is the address as stored; cv is the user's
// credential version when the token was issued: a password change, reset or demotion moves
// it on and so ends the token (absent in older tokens: 0).
type tokenClaims struct {
	Username          string `json:"username"`
	Admin             bool   `json:"admin"`
	CredentialVersion int64  `json:"cv"`
	jwt.RegisteredClaims
}

// errLifetimeTooLong: the token claims a longer life (exp - iat) than JWT_TTL.
var errLifetimeTooLong = errors.New("token lifetime exceeds JWT_TTL")

// parseToken verifies token (alg pinned, strict base64, iss and aud checked, exp and iat
// required, iat not in the future, exp - iat at most maxLifetime, leeway for clock skew)
// and decodes its claims into c.
func parseToken(token string, c *tokenClaims, key jwt.Keyfunc, alg, issuer, audience string, leeway, maxLifetime time.Duration) error {
	_, err := jwt.ParseWithClaims(token, c, key,
		jwt.WithValidMethods([]string{alg}),
		jwt.WithStrictDecoding(), // one token, one spelling: no unused base64 bits
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway))
	if err != nil {
		return err
	}
	if c.IssuedAt == nil {
		return fmt.Errorf("%w: iat", jwt.ErrTokenRequiredClaimMissing)
	}
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > maxLifetime {
		return errLifetimeTooLong
	}
	return nil
}

// pemSetting returns the setting name, or the contents of the file named by name_FILE.
func pemSetting(cfg map[string]string, name string) (string, error) {
	if v := cfg[name]; v != "" {
		return v, nil
	}
	file := cfg[name+"_FILE"]
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	return string(b), nil
}

// decodePEM returns the first PEM block of text. Literal "\n" sequences
// (a PEM squeezed into one env line) are accepted.
func decodePEM(text string) (*pem.Block, error) {
	if !strings.Contains(text, "\n") {
		text = strings.ReplaceAll(text, `\n`, "\n")
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	return block, nil
}

// parseRSAPrivateKey reads a PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY") PEM.
func parseRSAPrivateKey(text string) (*rsa.PrivateKey, error) {
	block, err := decodePEM(text)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is %T, want an RSA key", k)
		}
		return priv, nil
	default:
		return nil, fmt.Errorf("PEM block %q, want RSA PRIVATE KEY or PRIVATE KEY", block.Type)
	}
}

// parseRSAPublicKey reads a PKIX ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY") PEM.
func parseRSAPublicKey(text string) (*rsa.PublicKey, error) {
	block, err := decodePEM(text)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want an RSA key", k)
		}
		return pub, nil
	default:
		return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY or RSA PUBLIC KEY", block.Type)
	}
}

// checkRSABits refuses keys shorter than minRSABits.
func checkRSABits(pub *rsa.PublicKey) error {
	if pub.N.BitLen() < minRSABits {
		return fmt.Errorf("RSA key has %d bits, want at least %d", pub.N.BitLen(), minRSABits)
	}
	return nil
}

// jwkOf is the RFC 7517 JSON Web Key of an RSA public key, its kid the RFC 7638 thumbprint.
func jwkOf(pub *rsa.PublicKey) *jwk {
	k := &jwk{
		Kty: "RSA", Use: "sig", Alg: "RS256",
		N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
	sum := sha256.Sum256([]byte(`{"e":"` + k.E + `","kty":"RSA","n":"` + k.N + `"}`))
	k.Kid = base64.RawURLEncoding.EncodeToString(sum[:])
	return k
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
}

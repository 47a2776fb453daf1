package webhook

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/usersync/usersync/outbox"
)

// Defaults applied by Config.withDefaults.
const (
	DefaultListen          = ":8080"
	DefaultMaxBody         = 1 << 20
	DefaultInsertTimeout   = 5 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMaxConns bounds the open connections: about 20 KiB each when
	// idle, and well under the usual open-file limits.
	DefaultMaxConns = 1024
	// DefaultMaxBodyMemory bounds the bodies being read at once: sixteen
	// 1 MiB bodies, or thousands of the few-KiB bodies providers send.
	DefaultMaxBodyMemory = 16 << 20
)

// MinKeyBytes is the shortest signing key accepted: Svix issues 24-byte
// keys, and a short key can be guessed from a few forged deliveries.
const MinKeyBytes = 24

// Providers are the endpoints the receiver serves, /webhooks/<provider>.
var Providers = []string{outbox.ProviderClerk, outbox.ProviderStack, outbox.ProviderWorkOS, outbox.ProviderGeneric}

// SecretEnv names the environment variable that holds a provider's secrets;
// answers and errors point the operator at it.
func SecretEnv(provider string) string {
	switch provider {
	case outbox.ProviderClerk:
		return "CLERK_WEBHOOK_SECRET"
	case outbox.ProviderStack:
		return "STACK_WEBHOOK_SECRET"
	case outbox.ProviderWorkOS:
		return "WORKOS_WEBHOOK_SECRET"
	}
	return "GENERIC_WEBHOOK_SECRET"
}

// Config is what the receiver needs. Zero fields take the defaults.
type Config struct {
	// DatabaseURL is the PostgreSQL URL of the database holding neon_auth.outbox (Run only).
	DatabaseURL string
	// Listen is the TCP address to serve on (Run only; default :8080).
	Listen string
	// Secrets maps a provider (clerk, stack, workos, generic) to its
	// space-separated signing secrets; a provider without secrets answers 404.
	Secrets map[string]string
	// MaxBody is the largest body accepted, in bytes (default 1 MiB).
	MaxBody int64
	// MaxBodyMemory bounds the bytes of the bodies being read at once,
	// counted by their declared length (MaxBody when undeclared); a delivery
	// that does not fit answers 503 (default 16 MiB, at least 4 × MaxBody).
	MaxBodyMemory int64
	// MaxConns bounds the open connections (Run only; default 1024, lowered
	// to fit the open-file limit). At the bound the longest-idle connection
	// is closed to make room.
	MaxConns int
	// InsertTimeout bounds one insert, pool wait included (default 5s); past it the answer is 503.
	InsertTimeout time.Duration
	// Tolerance is how far a Svix signature timestamp may be from Now
	// (default 5m); WorkOS signatures have WorkOSTolerance.
	Tolerance time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown (default 30s).
	ShutdownTimeout time.Duration
	// Logger receives one line per request (default: discard).
	Logger *slog.Logger
	// Now is the clock for signature timestamps and message-id times (default time.Now).
	Now func() time.Time
	// Observer is told about every delivery answered (default: nobody).
	Observer RequestObserver
	// Metrics, when set, is served on GET /metrics.
	Metrics http.Handler
}

// RequestObserver is told about every webhook delivery answered, for
// metrics. provider is one of Providers or "unknown"; outcome is the
// answer's outcome (stored, duplicate, ignored, unauthorized, ...).
type RequestObserver interface {
	ObserveRequest(provider, outcome string, took time.Duration)
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxBodyMemory == 0 {
		c.MaxBodyMemory = max(DefaultMaxBodyMemory, 4*c.MaxBody)
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = DefaultInsertTimeout
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first field that cannot work, by name. It never
// quotes a secret.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := c.verifiers(); err != nil {
		return err
	}
	switch {
	case c.MaxBody < 0:
		return fmt.Errorf("MaxBody: %d, want a positive number of bytes", c.MaxBody)
	case c.MaxBodyMemory < c.MaxBody:
		return fmt.Errorf("MaxBodyMemory: %d is less than MaxBody (%d), so a body of the largest size could never be read", c.MaxBodyMemory, c.MaxBody)
	case c.MaxConns < MinConns:
		return fmt.Errorf("MaxConns: %d, want at least %d connections", c.MaxConns, MinConns)
	case c.InsertTimeout < 0:
		return fmt.Errorf("InsertTimeout: %s, want a positive duration", c.InsertTimeout)
	case c.Tolerance < 0:
		return fmt.Errorf("signature tolerance (Tolerance) %s: want a positive duration", c.Tolerance)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("ShutdownTimeout: %s, want a positive duration", c.ShutdownTimeout)
	}
	return nil
}

// ErrNoSecrets is returned when no provider has a secret: such a receiver
// could only answer 404.
var ErrNoSecrets = errors.New("no webhook secret: set CLERK_WEBHOOK_SECRET, STACK_WEBHOOK_SECRET, WORKOS_WEBHOOK_SECRET or GENERIC_WEBHOOK_SECRET")

// ParseKeys parses a provider's space-separated secrets into HMAC keys: the
// base64 after whsec_ for Svix senders (ParseSecrets), the secret as is for
// WorkOS (ParseWorkOSSecrets). Errors never quote a secret.
func ParseKeys(provider, list string) ([][]byte, error) {
	if provider == outbox.ProviderWorkOS {
		return ParseWorkOSSecrets(list)
	}
	return ParseSecrets(list)
}

// verifiers parses the secrets into one verifier per configured provider.
// It refuses keys shorter than MinKeyBytes, and a key shared by two
// providers: the signature does not cover the provider, so a delivery
// signed with a shared key would be stored once under each.
func (c Config) verifiers() (map[string]verifier, error) {
	for provider := range c.Secrets {
		if !slices.Contains(Providers, provider) {
			return nil, fmt.Errorf("unknown provider %q in Secrets: want clerk, stack, workos or generic", provider)
		}
	}
	out := make(map[string]verifier)
	owner := map[string]string{} // key -> the first provider that has it
	for _, provider := range Providers {
		list := c.Secrets[provider]
		if strings.TrimSpace(list) == "" {
			continue
		}
		keys, err := ParseKeys(provider, list)
		if err != nil {
			return nil, fmt.Errorf("secrets of %s (%s): %w", provider, SecretEnv(provider), err)
		}
		for i, key := range keys {
			if len(key) < MinKeyBytes {
				return nil, fmt.Errorf("secrets of %s (%s): secret %d of %d is %d bytes long, want at least %d (Svix issues 24-byte secrets): copy the whole signing secret from the dashboard, or for the generic endpoint make one with: echo \"whsec_$(openssl rand -base64 24)\"",
					provider, SecretEnv(provider), i+1, len(keys), len(key), MinKeyBytes)
			}
			if other, ok := owner[string(key)]; ok && other != provider {
				return nil, fmt.Errorf("%s and %s share a secret: a delivery signed with it would be stored once for each provider, since the signature does not cover which endpoint it was sent to; give each endpoint its own secret", SecretEnv(other), SecretEnv(provider))
			}
			owner[string(key)] = provider
		}
		if provider == outbox.ProviderWorkOS {
			out[provider] = NewWorkOSVerifier(keys, c.Now)
		} else {
			out[provider] = NewVerifier(keys, c.Tolerance, c.Now)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoSecrets
	}
	return out, nil
}

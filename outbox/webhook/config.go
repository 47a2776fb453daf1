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
)

// Providers are the endpoints the receiver serves, /webhooks/<provider>.
var Providers = []string{outbox.ProviderClerk, outbox.ProviderStack, outbox.ProviderGeneric}

// SecretEnv names the environment variable that holds a provider's secrets;
// answers and errors point the operator at it.
func SecretEnv(provider string) string {
	switch provider {
	case outbox.ProviderClerk:
		return "CLERK_WEBHOOK_SECRET"
	case outbox.ProviderStack:
		return "STACK_WEBHOOK_SECRET"
	}
	return "GENERIC_WEBHOOK_SECRET"
}

// Config is what the receiver needs. Zero fields take the defaults.
type Config struct {
	// DatabaseURL is the PostgreSQL URL of the database holding neon_auth.outbox (Run only).
	DatabaseURL string
	// Listen is the TCP address to serve on (Run only; default :8080).
	Listen string
	// Secrets maps a provider (clerk, stack, generic) to its space-separated
	// signing secrets; a provider without secrets answers 404.
	Secrets map[string]string
	// MaxBody is the largest body accepted, in bytes (default 1 MiB).
	MaxBody int64
	// InsertTimeout bounds one insert, pool wait included (default 5s); past it the answer is 503.
	InsertTimeout time.Duration
	// Tolerance is how far a signature timestamp may be from Now (default 5m).
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
var ErrNoSecrets = errors.New("no webhook secret: set CLERK_WEBHOOK_SECRET, STACK_WEBHOOK_SECRET or GENERIC_WEBHOOK_SECRET")

// verifiers parses the secrets into one Verifier per configured provider.
func (c Config) verifiers() (map[string]*Verifier, error) {
	out := make(map[string]*Verifier)
	for provider, list := range c.Secrets {
		if !slices.Contains(Providers, provider) {
			return nil, fmt.Errorf("unknown provider %q in Secrets: want clerk, stack or generic", provider)
		}
		if strings.TrimSpace(list) == "" {
			continue
		}
		keys, err := ParseSecrets(list)
		if err != nil {
			return nil, fmt.Errorf("secrets of %s (%s): %w", provider, SecretEnv(provider), err)
		}
		out[provider] = NewVerifier(keys, c.Tolerance, c.Now)
	}
	if len(out) == 0 {
		return nil, ErrNoSecrets
	}
	return out, nil
}

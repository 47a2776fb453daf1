package importer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/usersync/usersync/outbox"
)

// Providers lists the providers Run can import from.
var Providers = []string{outbox.ProviderClerk, outbox.ProviderStack, outbox.ProviderWorkOS}

// Credentials are the provider's API keys; only the chosen provider's are
// needed. They are sent in request headers and never logged or returned in
// an error.
type Credentials struct {
	// ClerkSecretKey is Clerk's secret key (sk_live_... or sk_test_...).
	ClerkSecretKey string
	// StackProjectID is the Stack Auth project id.
	StackProjectID string
	// StackSecretServerKey is the Stack Auth project's secret server key.
	StackSecretServerKey string
	// WorkOSAPIKey is the WorkOS API key (sk_...).
	WorkOSAPIKey string
}

// Config is what Run needs. Zero fields take the defaults of withDefaults.
type Config struct {
	// Provider is clerk, stack or workos.
	Provider string
	// APIURL is the provider's base URL, without the API path (default the
	// provider's public API; set it for a self-hosted Stack Auth or a test).
	APIURL string
	// Credentials authenticate the requests.
	Credentials Credentials
	// PruneMissing also emits user.deleted for each live users_sync user of
	// the provider that the listing did not return and that a direct look-up
	// confirms is gone.
	PruneMissing bool
	// DryRun lists and counts but writes nothing to neon_auth.
	DryRun bool
	// PageSize is the number of users asked for per request (default: Clerk
	// 500, Stack Auth 200, WorkOS 100, each API's maximum or a moderate size).
	PageSize int
	// RequestTimeout bounds each HTTP request, body included (default 30s).
	RequestTimeout time.Duration
	// MaxAttempts bounds the tries of one request that fails in a way worth
	// retrying: a 429, a 5xx, a timeout or a broken connection (default 10).
	MaxAttempts int
	// MinBackoff is the first retry delay after a 5xx or a connection error;
	// it doubles per attempt, with jitter (default 500ms).
	MinBackoff time.Duration
	// MaxBackoff caps the retry delay (default 30s).
	MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After a 429 may ask for before the
	// import gives up with an error (default 10m).
	MaxRetryAfter time.Duration
	// HTTPClient sends the requests (default: a client that follows no
	// redirects, so credentials never go to another host).
	HTTPClient *http.Client
	// Logger receives retries, skipped users and the outcome (default: discard).
	Logger *slog.Logger
	// Progress, when set, is called after each committed page and each
	// pruned batch, from Run's goroutine.
	Progress func(Progress)

	// sleep waits between retries; tests replace it to record the delays
	// instead of waiting them.
	sleep func(ctx context.Context, d time.Duration) error
	// now is the clock; tests may fix it.
	now func() time.Time
}

// providerInfo holds what differs between the providers apart from the API
// shapes (clerk.go, stack.go, workos.go).
type providerInfo struct {
	defaultURL      string
	defaultPageSize int
	// maxPageSize is the API's documented maximum (Clerk 500, WorkOS 100);
	// Stack Auth documents none, so ours bounds the memory a page takes.
	maxPageSize int
	// envVars name the environment variables of the credentials, in the
	// order the Credentials fields list them.
	envVars []string
}

var providerInfos = map[string]providerInfo{
	outbox.ProviderClerk:  {defaultURL: "https://api.clerk.com", defaultPageSize: 500, maxPageSize: 500, envVars: []string{"CLERK_SECRET_KEY"}},
	outbox.ProviderStack:  {defaultURL: "https://api.stack-auth.com", defaultPageSize: 200, maxPageSize: 1000, envVars: []string{"STACK_PROJECT_ID", "STACK_SECRET_SERVER_KEY"}},
	outbox.ProviderWorkOS: {defaultURL: "https://api.workos.com", defaultPageSize: 100, maxPageSize: 100, envVars: []string{"WORKOS_API_KEY"}},
}

// CredentialEnv names the environment variables holding a provider's
// credentials, in the order the Credentials fields list them; nil for an
// unknown provider.
func CredentialEnv(provider string) []string {
	return providerInfos[provider].envVars
}

func (c Config) withDefaults() Config {
	info := providerInfos[c.Provider]
	if c.APIURL == "" {
		c.APIURL = info.defaultURL
	}
	if c.PageSize == 0 {
		c.PageSize = info.defaultPageSize
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 10 * time.Minute
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{CheckRedirect: refuseRedirects}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// refuseRedirects stops at a redirect: Stack Auth's credentials travel in
// custom headers, which Go would forward to whatever host a redirect names.
func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Validate reports the first field that cannot work, by name; a missing
// credential is named by its environment variable.
func (c Config) Validate() error {
	info, ok := providerInfos[c.Provider]
	if !ok {
		return fmt.Errorf("provider %q: want clerk, stack or workos", c.Provider)
	}
	c = c.withDefaults()
	if err := c.Credentials.check(c.Provider); err != nil {
		return err
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return fmt.Errorf("API URL %q: want http(s)://host[:port][/path], without credentials", c.APIURL)
	}
	switch {
	case c.PageSize < 1 || c.PageSize > info.maxPageSize:
		return fmt.Errorf("page size %d: want 1 to %d for %s", c.PageSize, info.maxPageSize, c.Provider)
	case c.RequestTimeout < 0:
		return fmt.Errorf("request timeout %s: want a positive duration", c.RequestTimeout)
	case c.MaxAttempts < 1:
		return fmt.Errorf("max attempts %d: want at least 1", c.MaxAttempts)
	case c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("backoff %s to %s: want 0 <= min <= max", c.MinBackoff, c.MaxBackoff)
	case c.MaxRetryAfter < 0:
		return fmt.Errorf("max Retry-After %s: want a positive duration", c.MaxRetryAfter)
	}
	return nil
}

// errMissingCredential is wrapped by Validate's error for an empty credential.
var errMissingCredential = errors.New("missing credential")

func (cr Credentials) check(provider string) error {
	missing := func(v string) error {
		return fmt.Errorf("%w: set %s to the %s API key", errMissingCredential, v, provider)
	}
	switch provider {
	case outbox.ProviderClerk:
		if cr.ClerkSecretKey == "" {
			return missing("CLERK_SECRET_KEY")
		}
	case outbox.ProviderStack:
		if cr.StackProjectID == "" {
			return missing("STACK_PROJECT_ID")
		}
		if cr.StackSecretServerKey == "" {
			return missing("STACK_SECRET_SERVER_KEY")
		}
	case outbox.ProviderWorkOS:
		if cr.WorkOSAPIKey == "" {
			return missing("WORKOS_API_KEY")
		}
	}
	return nil
}

// secrets lists the credential values, to scrub from any text that might
// echo them (an error body).
func (cr Credentials) secrets() []string {
	var out []string
	for _, s := range []string{cr.ClerkSecretKey, cr.StackSecretServerKey, cr.WorkOSAPIKey} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package importer

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/usersync/usersync/outbox"
)

// errNotFound is the provider's 404 for one user: the user is gone.
var errNotFound = errors.New("not found")

// AuthError is returned when the provider refuses the credentials (401 or
// 403). Retrying cannot help; the sentence names the variables to check.
type AuthError struct {
	// Provider is clerk, stack or workos.
	Provider string
	// Status is the HTTP status, 401 or 403.
	Status int
	// Detail is the provider's explanation, shortened, credentials removed.
	Detail string
}

func (e *AuthError) Error() string {
	msg := fmt.Sprintf("%s refused the credentials (%d %s): check %s",
		e.Provider, e.Status, http.StatusText(e.Status), strings.Join(CredentialEnv(e.Provider), " and "))
	if e.Provider == outbox.ProviderStack {
		msg += " (a server key of that project)"
	}
	if e.Detail != "" {
		msg += "; the API said: " + e.Detail
	}
	return msg
}

// StatusError is an answer the import cannot use and retrying will not
// change (a 400, a 422, a redirect), or a retryable one that persisted
// beyond the attempts allowed.
type StatusError struct {
	// Provider is clerk, stack or workos.
	Provider string
	// Request is the method and path, without the query.
	Request string
	// Status is the HTTP status.
	Status int
	// Detail is the body, shortened, credentials removed.
	Detail string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s answered %d %s to %s", e.Provider, e.Status, http.StatusText(e.Status), e.Request)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

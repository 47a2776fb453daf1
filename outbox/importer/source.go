package importer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/usersync/usersync/outbox"
)

// source is one provider's list-users API.
type source interface {
	// listPage fetches the page at cursor ("" for the first); the next
	// page's cursor is "" after the last page.
	listPage(ctx context.Context, cursor string) (page, error)
	// getUser fetches one user; errNotFound when the provider has none.
	getUser(ctx context.Context, id string) (json.RawMessage, error)
}

// page is one answer of a list-users API.
type page struct {
	users []json.RawMessage
	next  string
}

var (
	_ source = (*clerkSource)(nil)
	_ source = (*stackSource)(nil)
	_ source = (*workosSource)(nil)
)

func newSource(cfg Config) (source, error) {
	switch cfg.Provider {
	case outbox.ProviderClerk:
		return newClerkSource(cfg)
	case outbox.ProviderStack:
		return newStackSource(cfg)
	case outbox.ProviderWorkOS:
		return newWorkOSSource(cfg)
	}
	return nil, fmt.Errorf("provider %q: want clerk, stack or workos", cfg.Provider)
}

// decodeAnswer parses a JSON answer into v, saying which request it was for.
func decodeAnswer(provider, what string, body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s answered %s with something that is not the documented JSON: %v", provider, what, err)
	}
	return nil
}

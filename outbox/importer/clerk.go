package importer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// clerkSource pages Clerk's Backend API: GET /v1/users?limit&offset&order_by
// answers a JSON array of User objects, oldest first with order_by
// "+created_at" (so users created during the listing land on later pages,
// not before the offset); GET /v1/users/{id} answers one, or 404.
type clerkSource struct {
	api      *apiClient
	pageSize int
}

func newClerkSource(cfg Config) (*clerkSource, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cfg.Credentials.ClerkSecretKey)
	api, err := newAPIClient(cfg, h)
	if err != nil {
		return nil, err
	}
	return &clerkSource{api: api, pageSize: cfg.PageSize}, nil
}

// listPage's cursor is the offset. A short page is the last.
func (s *clerkSource) listPage(ctx context.Context, cursor string) (page, error) {
	offset := 0
	if cursor != "" {
		var err error
		if offset, err = strconv.Atoi(cursor); err != nil {
			return page{}, fmt.Errorf("clerk cursor %q: %w", cursor, err)
		}
	}
	q := url.Values{
		"limit":    {strconv.Itoa(s.pageSize)},
		"offset":   {strconv.Itoa(offset)},
		"order_by": {"+created_at"},
	}
	body, err := s.api.get(ctx, s.api.endpoint(q, "v1", "users"))
	if err != nil {
		return page{}, err
	}
	users, err := decodeClerkList(body)
	if err != nil {
		return page{}, err
	}
	p := page{users: users}
	if len(users) >= s.pageSize {
		p.next = strconv.Itoa(offset + len(users))
	}
	return p, nil
}

// decodeClerkList reads the documented array; it also takes the
// {"data": [...], "total_count": n} shape of Clerk's paginated endpoints,
// in case the users list adopts it.
func decodeClerkList(body []byte) ([]json.RawMessage, error) {
	var users []json.RawMessage
	if err := json.Unmarshal(body, &users); err == nil {
		return users, nil
	}
	var wrapped struct {
		Data *[]json.RawMessage `json:"data"`
	}
	if err := decodeAnswer("clerk", "GET /v1/users", body, &wrapped); err != nil {
		return nil, err
	}
	if wrapped.Data == nil {
		return nil, fmt.Errorf("clerk answered GET /v1/users with neither a JSON array nor a \"data\" array")
	}
	return *wrapped.Data, nil
}

func (s *clerkSource) getUser(ctx context.Context, id string) (json.RawMessage, error) {
	return s.api.get(ctx, s.api.endpoint(nil, "v1", "users", id))
}

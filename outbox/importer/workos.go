package importer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// workosSource pages WorkOS User Management: GET /user_management/users
// with Authorization: Bearer answers {object: "list", data, list_metadata:
// {before, after}}; list_metadata.after is passed back as ?after=, and is
// null after the last page. The order is WorkOS's documented default for
// paging, newest first. GET /user_management/users/{id} answers one, or 404.
type workosSource struct {
	api      *apiClient
	pageSize int
}

func newWorkOSSource(cfg Config) (*workosSource, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cfg.Credentials.WorkOSAPIKey)
	api, err := newAPIClient(cfg, h)
	if err != nil {
		return nil, err
	}
	return &workosSource{api: api, pageSize: cfg.PageSize}, nil
}

func (s *workosSource) listPage(ctx context.Context, cursor string) (page, error) {
	q := url.Values{
		"limit": {strconv.Itoa(s.pageSize)},
		"order": {"desc"},
	}
	if cursor != "" {
		q.Set("after", cursor)
	}
	body, err := s.api.get(ctx, s.api.endpoint(q, "user_management", "users"))
	if err != nil {
		return page{}, err
	}
	var ans struct {
		Data         *[]json.RawMessage `json:"data"`
		ListMetadata struct {
			After *string `json:"after"`
		} `json:"list_metadata"`
	}
	if err := decodeAnswer("workos", "GET /user_management/users", body, &ans); err != nil {
		return page{}, err
	}
	if ans.Data == nil {
		return page{}, fmt.Errorf("workos answered GET /user_management/users without a \"data\" array")
	}
	p := page{users: *ans.Data}
	if ans.ListMetadata.After != nil {
		p.next = *ans.ListMetadata.After
	}
	return p, nil
}

func (s *workosSource) getUser(ctx context.Context, id string) (json.RawMessage, error) {
	return s.api.get(ctx, s.api.endpoint(nil, "user_management", "users", id))
}

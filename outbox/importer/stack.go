package importer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// stackSource pages Stack Auth's server API: GET /api/v1/users with the
// x-stack-access-type: server, x-stack-project-id and
// x-stack-secret-server-key headers answers {items, is_paginated,
// pagination: {next_cursor}}, oldest sign-up first; next_cursor (a user id)
// is passed back as ?cursor=, and is null after the last page.
// include_anonymous=true lists anonymous and restricted users too, as the
// webhooks report them; without it a prune would delete them.
type stackSource struct {
	api      *apiClient
	pageSize int
}

func newStackSource(cfg Config) (*stackSource, error) {
	h := http.Header{}
	h.Set("x-stack-access-type", "server")
	h.Set("x-stack-project-id", cfg.Credentials.StackProjectID)
	h.Set("x-stack-secret-server-key", cfg.Credentials.StackSecretServerKey)
	api, err := newAPIClient(cfg, h)
	if err != nil {
		return nil, err
	}
	return &stackSource{api: api, pageSize: cfg.PageSize}, nil
}

func (s *stackSource) listPage(ctx context.Context, cursor string) (page, error) {
	q := url.Values{
		"limit":             {strconv.Itoa(s.pageSize)},
		"order_by":          {"signed_up_at"},
		"include_anonymous": {"true"},
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	body, err := s.api.get(ctx, s.api.endpoint(q, "api", "v1", "users"))
	if err != nil {
		return page{}, err
	}
	var ans struct {
		Items      *[]json.RawMessage `json:"items"`
		Pagination struct {
			NextCursor *string `json:"next_cursor"`
		} `json:"pagination"`
	}
	if err := decodeAnswer("stack", "GET /api/v1/users", body, &ans); err != nil {
		return page{}, err
	}
	if ans.Items == nil {
		return page{}, fmt.Errorf("stack answered GET /api/v1/users without an \"items\" array")
	}
	p := page{users: *ans.Items}
	if ans.Pagination.NextCursor != nil {
		p.next = *ans.Pagination.NextCursor
	}
	return p, nil
}

func (s *stackSource) getUser(ctx context.Context, id string) (json.RawMessage, error) {
	return s.api.get(ctx, s.api.endpoint(nil, "api", "v1", "users", id))
}

package importertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewClerk fakes Clerk's Backend API (https://clerk.com/docs/reference/backend-api):
// GET /v1/users?limit&offset&order_by answers a JSON array of users (limit 1
// to 500, default 10; order_by "created_at" or "updated_at", "-" newest
// first, the default "-created_at", "+" oldest first); GET /v1/users/{id}
// answers one or 404. Requests need "Authorization: Bearer <secretKey>".
func NewClerk(t testing.TB, secretKey string) *Server {
	return newServer(t, func(s *Server, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+secretKey {
			clerkError(w, http.StatusUnauthorized, "authentication_invalid", "The provided Clerk Secret Key is invalid.")
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/users/"); ok {
			if obj, found := s.find(id); found {
				writeJSON(w, http.StatusOK, obj)
				return
			}
			clerkError(w, http.StatusNotFound, "resource_not_found", "not found")
			return
		}
		if r.URL.Path != "/v1/users" {
			clerkError(w, http.StatusNotFound, "resource_not_found", "not found")
			return
		}
		limit, ok1 := intParam(r, "limit", 10, 1, 500)
		offset, ok2 := intParam(r, "offset", 0, 0, 1<<31)
		if !ok1 || !ok2 {
			clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "limit must be 1 to 500 and offset at least 0")
			return
		}
		users := s.listed()
		switch r.URL.Query().Get("order_by") {
		case "+created_at", "created_at":
		case "", "-created_at":
			users = reversed(users)
		default: // updated_at orders are not needed by the importer
			clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "order_by not supported by this fake")
			return
		}
		users = users[min(offset, len(users)):]
		writeJSON(w, http.StatusOK, objects(users[:min(limit, len(users))]))
	})
}

func clerkError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]string{{"code": code, "message": message, "long_message": message}}})
}

// ClerkUser is a Clerk User object (clerk/javascript UserJSON) with one
// verified email address, which is primary; times are millisecond epochs.
func ClerkUser(id, first, last, email string, created, updated time.Time) json.RawMessage {
	emailID := "idn_" + strings.TrimPrefix(id, "user_")
	b, _ := json.Marshal(map[string]any{
		"object": "user", "id": id, "username": nil,
		"first_name": first, "last_name": last, "image_url": "https://img.clerk.com/x", "has_image": false,
		"primary_email_address_id": emailID, "primary_phone_number_id": nil, "primary_web3_wallet_id": nil,
		"email_addresses": []map[string]any{{
			"id": emailID, "object": "email_address", "email_address": email,
			"verification": map[string]any{"status": "verified", "strategy": "email_code"}, "linked_to": []any{},
		}},
		"phone_numbers": []any{}, "web3_wallets": []any{}, "external_accounts": []any{},
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{}, "unsafe_metadata": map[string]any{},
		"banned": false, "locked": false, "external_id": nil,
		"last_sign_in_at": nil, "created_at": created.UnixMilli(), "updated_at": updated.UnixMilli(),
	})
	return b
}

package importer

import (
	"errors"
	"strings"
	"testing"
)

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	clerk := Credentials{ClerkSecretKey: "sk_test_x"}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"valid", Config{Provider: "clerk", Credentials: clerk}, ""},
		{"valid stack, self-hosted over http", Config{Provider: "stack", APIURL: "http://localhost:8102",
			Credentials: Credentials{StackProjectID: "p", StackSecretServerKey: "k"}}, ""},
		{"unknown provider", Config{Provider: "auth0"}, `provider "auth0": want clerk, stack or workos`},
		{"no clerk key", Config{Provider: "clerk"}, "set CLERK_SECRET_KEY"},
		{"no stack project", Config{Provider: "stack", Credentials: Credentials{StackSecretServerKey: "k"}}, "set STACK_PROJECT_ID"},
		{"no stack key", Config{Provider: "stack", Credentials: Credentials{StackProjectID: "p"}}, "set STACK_SECRET_SERVER_KEY"},
		{"no workos key", Config{Provider: "workos", Credentials: clerk}, "set WORKOS_API_KEY"},
		{"API URL without scheme", Config{Provider: "clerk", Credentials: clerk, APIURL: "api.clerk.com"}, "API URL"},
		{"API URL with credentials", Config{Provider: "clerk", Credentials: clerk, APIURL: "https://u:p@api.clerk.com"}, "without credentials"},
		{"Clerk page above its maximum", Config{Provider: "clerk", Credentials: clerk, PageSize: 501}, "page size 501: want 1 to 500 for clerk"},
		{"WorkOS page above its maximum", Config{Provider: "workos", Credentials: Credentials{WorkOSAPIKey: "k"}, PageSize: 101}, "want 1 to 100"},
		{"negative page size", Config{Provider: "clerk", Credentials: clerk, PageSize: -1}, "page size -1"},
		{"backoff bounds reversed", Config{Provider: "clerk", Credentials: clerk, MinBackoff: 2, MaxBackoff: 1}, "backoff"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: Validate = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
	if err := (Config{Provider: "clerk"}).Validate(); !errors.Is(err, errMissingCredential) {
		t.Errorf("a missing key is %v, want errMissingCredential", err)
	}
}

package controlplane

import (
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/rules"
)

func errorf(kind admin.ErrorKind, format string, args ...any) *admin.Error {
	return rules.Errorf(kind, format, args...)
}

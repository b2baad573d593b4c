package controlplane

import (
	"fmt"

	"github.com/cutover/cutover/internal/admin"
)

func errorf(kind admin.ErrorKind, format string, args ...any) *admin.Error {
	return &admin.Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

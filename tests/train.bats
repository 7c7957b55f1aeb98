#!/usr/bin/env bats

@test "ds-train --help" {
	ds-train --help
}

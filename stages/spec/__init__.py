"""The TAO spec model: lossless text-format parsing, field paths, path substitution, validation."""
from .paths import (CONTAINER_PREFIXES, PATH_FIELDS, PathField, Problem, SpecCheckError, check,
                    parse_mapping, path_values, substitute)
from .textformat import Spec, SpecPathError, SpecSyntaxError, quote_string

__all__ = ["CONTAINER_PREFIXES", "PATH_FIELDS", "PathField", "Problem", "Spec", "SpecCheckError",
           "SpecPathError", "SpecSyntaxError", "check", "parse_mapping", "path_values",
           "quote_string", "substitute"]

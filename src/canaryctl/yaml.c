/*
 * yaml.c - `-o yaml`: the JSON document a verb would print with -o json,
 * written as block-style YAML that YAML 1.1 and 1.2 parsers both read back
 * as the same document.  Keys keep the server's order (the order -o json
 * prints).  Strings are plain only when they cannot be read as anything but
 * a string; everything else is double-quoted with escapes.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "canaryctl/ctl.h"
#include "core/buf.h"

/* Deeper than any document the server sends; jansson's parser stops at 2048. */
#define YAML_MAX_DEPTH 128

/*
 * An implicit key ("k: v") is at most 1024 characters (YAML 1.2 §7.4.2,
 * 1.1 the same).  A key longer than this many bytes, which escapes can make
 * up to 6 times longer, is written explicit ("? k" then ": v").
 */
#define YAML_IMPLICIT_KEY_MAX 160

/* Words some YAML version reads as null or a boolean (compared case-blind). */
static const char *const reserved_words[] = {"null", "true", "false", "yes", "no",
                                             "on",   "off",  "y",     "n"};

static bool plain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.' || c == '/';
}

/*
 * A string may be written plain when it starts with a letter, holds only
 * [A-Za-z0-9_./-] and is no reserved word: no number, timestamp, null,
 * boolean, indicator or comment can start that way.
 */
static bool can_be_plain(const char *s, size_t len)
{
	if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!plain_char((unsigned char)s[i]))
			return false;
	for (size_t i = 0; i < sizeof(reserved_words) / sizeof(reserved_words[0]); i++)
		if (strlen(reserved_words[i]) == len && strncasecmp(s, reserved_words[i], len) == 0)
			return false;
	return true;
}

/*
 * Decodes the UTF-8 sequence at s[*i] (jansson's strings are valid UTF-8)
 * and advances *i; a malformed byte decodes as itself.
 */
static unsigned long next_codepoint(const unsigned char *s, size_t len, size_t *i)
{
	unsigned long cp = s[*i];
	size_t n = 0;

	if (cp >= 0xf0)
		n = 3, cp &= 0x07;
	else if (cp >= 0xe0)
		n = 2, cp &= 0x0f;
	else if (cp >= 0xc0)
		n = 1, cp &= 0x1f;
	if (*i + n >= len) {
		(*i)++;
		return s[*i - 1];
	}
	for (size_t k = 1; k <= n; k++)
		cp = (cp << 6) | (s[*i + k] & 0x3f);
	*i += n + 1;
	return cp;
}

/* Characters YAML does not allow raw in a stream, or reads as line breaks. */
static bool must_escape(unsigned long cp)
{
	return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0xfeff || cp == 0xfffe || cp == 0xffff;
}

static int put_quoted(struct buf *b, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	int rc = buf_append_str(b, "\"");

	for (size_t i = 0; i < len && rc == 0;) {
		size_t start = i;
		unsigned long cp = next_codepoint(s, len, &i);

		if (cp == '"')
			rc = buf_append_str(b, "\\\"");
		else if (cp == '\\')
			rc = buf_append_str(b, "\\\\");
		else if (cp == '\n')
			rc = buf_append_str(b, "\\n");
		else if (cp == '\t')
			rc = buf_append_str(b, "\\t");
		else if (cp == '\r')
			rc = buf_append_str(b, "\\r");
		else if (must_escape(cp))
			rc = buf_printf(b, "\\u%04lx", cp);
		else
			rc = buf_append(b, s + start, i - start);
	}
	return rc ? rc : buf_append_str(b, "\"");
}

static int put_string(struct buf *b, const char *s, size_t len)
{
	if (can_be_plain(s, len))
		return buf_append(b, s, len);
	return put_quoted(b, s, len);
}

/*
 * A real as YAML 1.1 reads a float too: it needs a '.' before any exponent
 * ("1e-05" would be a string there), so one is added when %.17g left none.
 */
static int put_real(struct buf *b, double v)
{
	char s[64], *e;

	snprintf(s, sizeof(s), "%.17g", v);
	if (strchr(s, '.'))
		return buf_append_str(b, s);
	e = strchr(s, 'e');
	if (!e)
		return buf_printf(b, "%s.0", s);
	return buf_printf(b, "%.*s.0%s", (int)(e - s), s, e);
}

static int put_scalar(struct buf *b, const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return put_string(b, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		return buf_printf(b, "%lld", (long long)json_integer_value(v));
	case JSON_REAL:
		return put_real(b, json_real_value(v));
	case JSON_TRUE:
		return buf_append_str(b, "true");
	case JSON_FALSE:
		return buf_append_str(b, "false");
	case JSON_NULL:
		return buf_append_str(b, "null");
	case JSON_OBJECT:
		return buf_append_str(b, "{}"); /* only reached when empty */
	case JSON_ARRAY:
		return buf_append_str(b, "[]");
	}
	return -1;
}

static bool is_block(const json_t *v)
{
	return (json_is_object(v) && json_object_size(v) > 0) ||
	       (json_is_array(v) && json_array_size(v) > 0);
}

static int put_indent(struct buf *b, int indent)
{
	for (int i = 0; i < indent; i++)
		if (buf_append_str(b, " "))
			return -1;
	return 0;
}

/*
 * Writes the non-empty container v at indent.  first_inline: the caller
 * already wrote "- " for the first line, so it takes no indentation.
 */
static int put_block(struct buf *b, const json_t *v, int indent, bool first_inline, int depth)
{
	bool first = true, explicit_key;
	const char *k;
	json_t *item;
	size_t i;

	if (depth > YAML_MAX_DEPTH)
		return -1;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, item)
		{
			if (!(first && first_inline) && put_indent(b, indent))
				return -1;
			first = false;
			explicit_key = strlen(k) > YAML_IMPLICIT_KEY_MAX;
			if (explicit_key &&
			    (buf_append_str(b, "? ") || put_string(b, k, strlen(k)) ||
			     buf_append_str(b, "\n") || put_indent(b, indent)))
				return -1;
			if ((!explicit_key && put_string(b, k, strlen(k))) ||
			    buf_append_str(b, ":"))
				return -1;
			if (is_block(item)) {
				int child =
				    json_is_array(item) && !explicit_key ? indent : indent + 2;

				/* a list under a key may sit at the key's column */
				if (buf_append_str(b, "\n") ||
				    put_block(b, item, child, false, depth + 1))
					return -1;
			} else if (buf_append_str(b, " ") || put_scalar(b, item) ||
			           buf_append_str(b, "\n")) {
				return -1;
			}
		}
		return 0;
	}
	json_array_foreach(v, i, item)
	{
		if (!(first && first_inline) && put_indent(b, indent))
			return -1;
		first = false;
		if (buf_append_str(b, "- "))
			return -1;
		if (is_block(item)) {
			if (put_block(b, item, indent + 2, true, depth + 1))
				return -1;
		} else if (put_scalar(b, item) || buf_append_str(b, "\n")) {
			return -1;
		}
	}
	return 0;
}

int ctl_yaml_append(struct buf *b, const json_t *doc)
{
	if (!doc)
		return buf_append_str(b, "null\n");
	if (is_block(doc))
		return put_block(b, doc, 0, false, 0);
	if (put_scalar(b, doc))
		return -1;
	return buf_append_str(b, "\n");
}

int ctl_set_output(struct ctl *ctl, const char *fmt)
{
	if (strcmp(fmt, "table") == 0)
		ctl->json = 0, ctl->yaml = 0;
	else if (strcmp(fmt, "json") == 0)
		ctl->json = 1, ctl->yaml = 0;
	else if (strcmp(fmt, "yaml") == 0)
		ctl->json = 1, ctl->yaml = 1;
	else
		return -1;
	return 0;
}

void ctl_print(const struct ctl *ctl, json_t *doc)
{
	struct buf b;

	if (!ctl->yaml) {
		ctl_print_json(doc);
		return;
	}
	buf_init(&b, CTL_YAML_CAP);
	if (ctl_yaml_append(&b, doc) != 0)
		fprintf(stderr, "canaryctl: the answer does not fit in %u MiB of YAML\n",
		        CTL_YAML_CAP >> 20);
	else
		fwrite(buf_head(&b), 1, buf_used(&b), stdout);
	buf_release(&b);
}

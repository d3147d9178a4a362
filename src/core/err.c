/* err.c - text for err.h's codes. */
#include "core/err.h"

#include <string.h>

const char *err_str(int err)
{
	switch (err) {
	case 0:
		return "ok";
	case ERR_NOTFOUND:
		return "not found";
	case ERR_STATE:
		return "wrong state";
	case ERR_CONFLICT:
		return "conflict";
	case ERR_INVALID:
		return "invalid";
	case ERR_FORBIDDEN:
		return "forbidden";
	case ERR_UNAVAILABLE:
		return "store unavailable";
	case ERR_STORE:
		return "store write failed";
	case ERR_NOCHANGE:
		return "no change";
	}
	return err < 0 ? strerror(-err) : "unknown error";
}

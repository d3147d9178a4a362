/*
 * err.h - the named error codes modules return (STYLE.md section 4).
 *
 * A module function returns 0 on success, a negative errno for system-level
 * failures (-ENOMEM, -EINVAL, ...) or one of these for failures a caller must
 * tell apart.  Only src/api/ turns them into HTTP statuses and JSON error
 * codes (api_err_status()); nothing below it knows about HTTP.  The values
 * are far from errno's range so both can share an int.
 */
#ifndef CORE_ERR_H
#define CORE_ERR_H

enum err_code {
	ERR_NOTFOUND = -20001,    /* no such object (rollout, flag, service) */
	ERR_STATE = -20002,       /* the object is in the wrong state for this action */
	ERR_CONFLICT = -20003,    /* revision mismatch, or owned by another (rollout) */
	ERR_INVALID = -20004,     /* the request is malformed or fails validation */
	ERR_FORBIDDEN = -20005,   /* the identity may not do this (approvers) */
	ERR_UNAVAILABLE = -20006, /* the store cannot be reached: nothing was written */
	ERR_STORE = -20007,       /* the store refused the write: nothing was written */
	ERR_NOCHANGE = -20008,    /* nothing to do: the state already is as asked (not a failure) */
};

/* Static English text for an ERR_* code or a negative errno. */
const char *err_str(int err);

#endif

#include "core/bucket.h"

#include <string.h>

static inline uint32_t rotl32(uint32_t x, int r)
{
	return (x << r) | (x >> (32 - r));
}

#define MM_C1 0xcc9e2d51u
#define MM_C2 0x1b873593u

struct mm_state {
	uint32_t h;
	uint32_t len;
	uint32_t tail;  /* pending bytes, little-endian */
	unsigned ntail; /* 0..3 */
};

static inline void mm_block(struct mm_state *s, uint32_t k)
{
	k *= MM_C1;
	k = rotl32(k, 15);
	k *= MM_C2;
	s->h ^= k;
	s->h = rotl32(s->h, 13);
	s->h = s->h * 5 + 0xe6546b64u;
}

/* Streaming update so salt ":" key hashes without a copy. */
static void mm_update(struct mm_state *s, const unsigned char *p, size_t n)
{
	s->len += (uint32_t)n;
	while (n && s->ntail) {
		s->tail |= (uint32_t)*p++ << (8 * s->ntail);
		n--;
		if (++s->ntail == 4) {
			mm_block(s, s->tail);
			s->tail = 0;
			s->ntail = 0;
		}
	}
	while (n >= 4) {
		uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		             (uint32_t)p[3] << 24;

		mm_block(s, k);
		p += 4;
		n -= 4;
	}
	while (n--) {
		s->tail |= (uint32_t)*p++ << (8 * s->ntail);
		s->ntail++;
	}
}

static uint32_t mm_final(struct mm_state *s)
{
	uint32_t h = s->h;

	if (s->ntail) {
		uint32_t k = s->tail;

		k *= MM_C1;
		k = rotl32(k, 15);
		k *= MM_C2;
		h ^= k;
	}
	h ^= s->len;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

uint32_t murmur3_x86_32(const void *data, size_t len, uint32_t seed)
{
	struct mm_state s = {seed, 0, 0, 0};

	mm_update(&s, data, len);
	return mm_final(&s);
}

uint32_t bucket_hash(const char *salt, size_t salt_len, const char *key, size_t key_len)
{
	struct mm_state s = {0, 0, 0, 0};

	mm_update(&s, (const unsigned char *)salt, salt_len);
	mm_update(&s, (const unsigned char *)":", 1);
	mm_update(&s, (const unsigned char *)key, key_len);
	return mm_final(&s);
}

uint32_t bucket_of(const char *salt, size_t salt_len, const char *key, size_t key_len)
{
	return bucket_from_hash(bucket_hash(salt, salt_len, key, key_len));
}

const char *cohort_name(enum cohort c)
{
	static const char *const names[] = {"stable", "canary", "baseline", "shadow"};

	return (unsigned)c < COHORT_COUNT ? names[c] : "unknown";
}

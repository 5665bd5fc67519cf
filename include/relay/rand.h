/**
 * @file rand.h
 * Unpredictable identifiers from the kernel's CSPRNG (session ids, resume tokens, epochs).
 */
#ifndef RELAY_RAND_H
#define RELAY_RAND_H

#include <stddef.h>

/* Writes 2*nbytes lowercase hex characters and a NUL into out (size >= 2*nbytes+1).
 * Returns 0, or -1 if the kernel could not supply randomness. */
int rand_hex(char *out, size_t nbytes);

#endif

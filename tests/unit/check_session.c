/*
 * check_session.c: the per-connection session: its state machine (the seed's lifecycle) and the
 * flags and stats gauges it keeps in step, the broadcast gate, identity and colors, the
 * direct-reply queue, the rate limiter (driven by a synthetic clock) and frame reassembly.
 */
#include <check.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/log.h"
#include "session.h"

static relay_stats stats;

static void setup(void)
{
    memset(&stats, 0, sizeof stats);
}

static session *new_session(const char *color)
{
    session *s = session_create(1, NULL, "doc-1", color, &stats);
    ck_assert_ptr_nonnull(s);
    return s;
}

static token_claims sample_claims(void)
{
    static char *docs[] = {"doc-1", "team-*"};
    return (token_claims){.user_id = "alice",
                          .user_name = "Alice",
                          .exp = INT64_C(1700000000),
                          .has_docs = true,
                          .docs = docs,
                          .n_docs = 2};
}

static void identify(session *s)
{
    token_claims c = sample_claims();
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", NULL, &c), 0);
}

static uint32_t refs(msgbuf *mb)
{
    return atomic_load(&mb->refs);
}

/* ---- state machine -------------------------------------------------------------------------- */

START_TEST(test_create_counts_connection)
{
    session *a = new_session(NULL);
    ck_assert_int_eq(a->state, SESSION_PENDING);
    ck_assert(!a->authenticated);
    ck_assert(!a->document_joined);
    ck_assert_str_eq(a->document_id, "doc-1");
    ck_assert_uint_eq(a->conn_id, 1);
    ck_assert_uint_eq(stats.active, 1);
    ck_assert_uint_eq(stats.peak, 1);
    ck_assert_uint_eq(stats.total, 1);

    session *b = new_session(NULL), *c = new_session(NULL);
    ck_assert_uint_eq(stats.active, 3);
    ck_assert_uint_eq(stats.peak, 3);
    session_destroy(b);
    session_destroy(c);
    ck_assert_uint_eq(stats.active, 1);
    ck_assert_uint_eq(stats.peak, 3); /* peak never falls */
    ck_assert_uint_eq(stats.total, 3);
    session *d = new_session(NULL);
    ck_assert_uint_eq(stats.active, 2);
    ck_assert_uint_eq(stats.peak, 3);
    ck_assert_uint_eq(stats.total, 4);
    session_destroy(a);
    session_destroy(d);
    ck_assert_uint_eq(stats.active, 0);
    session_destroy(NULL);
}
END_TEST

/* Every (from, to) pair: allowed moves change the state, refused ones return -1 and leave the
 * state, the flags and the gauges as they were. */
static const struct {
    session_state from, to;
    bool ok;
} transitions[] = {
    {SESSION_PENDING, SESSION_PENDING, false},
    {SESSION_PENDING, SESSION_AUTHENTICATED, true},
    {SESSION_PENDING, SESSION_JOINED, false},
    {SESSION_PENDING, SESSION_CLOSED, true},
    {SESSION_AUTHENTICATED, SESSION_PENDING, false},
    {SESSION_AUTHENTICATED, SESSION_AUTHENTICATED, false},
    {SESSION_AUTHENTICATED, SESSION_JOINED, true},
    {SESSION_AUTHENTICATED, SESSION_CLOSED, true},
    {SESSION_JOINED, SESSION_PENDING, false},
    {SESSION_JOINED, SESSION_AUTHENTICATED, true},
    {SESSION_JOINED, SESSION_JOINED, false},
    {SESSION_JOINED, SESSION_CLOSED, true},
    {SESSION_CLOSED, SESSION_PENDING, false},
    {SESSION_CLOSED, SESSION_AUTHENTICATED, false},
    {SESSION_CLOSED, SESSION_JOINED, false},
    {SESSION_CLOSED, SESSION_CLOSED, false},
};

/* Drives a new session to st through allowed moves only. */
static void drive_to(session *s, session_state st)
{
    static const session_state path[] = {SESSION_AUTHENTICATED, SESSION_JOINED};
    if (st == SESSION_CLOSED) {
        ck_assert_int_eq(session_set_state(s, SESSION_CLOSED), 0);
        return;
    }
    for (size_t i = 0; i < 2 && s->state != st; i++)
        ck_assert_int_eq(session_set_state(s, path[i]), 0);
    ck_assert_int_eq(s->state, st);
}

/* The flags and gauges each state implies (one session alive). */
static void assert_consistent(const session *s)
{
    bool auth = s->state == SESSION_AUTHENTICATED || s->state == SESSION_JOINED;
    bool joined = s->state == SESSION_JOINED;
    ck_assert_int_eq(s->authenticated, auth);
    ck_assert_int_eq(s->document_joined, joined);
    ck_assert_uint_eq(stats.authenticated, auth ? 1 : 0);
    ck_assert_uint_eq(stats.joined, joined ? 1 : 0);
    ck_assert_uint_eq(stats.active, 1);
}

START_TEST(test_transitions)
{
    session *s = new_session(NULL);
    identify(s);
    drive_to(s, transitions[_i].from);
    assert_consistent(s);
    int rc = session_set_state(s, transitions[_i].to);
    ck_assert_msg(rc == (transitions[_i].ok ? 0 : -1), "%s -> %s returned %d",
                  session_state_name(transitions[_i].from), session_state_name(transitions[_i].to),
                  rc);
    ck_assert_int_eq(s->state, transitions[_i].ok ? transitions[_i].to : transitions[_i].from);
    assert_consistent(s);
    session_destroy(s);
    ck_assert_uint_eq(stats.active, 0);
    ck_assert_uint_eq(stats.authenticated, 0);
    ck_assert_uint_eq(stats.joined, 0);
}
END_TEST

/* A full life with join/leave cycles, and several sessions sharing the gauges. */
START_TEST(test_lifecycle_gauges)
{
    session *a = new_session(NULL), *b = new_session(NULL);
    ck_assert_int_eq(session_set_state(a, SESSION_AUTHENTICATED), 0);
    ck_assert_int_eq(session_set_state(b, SESSION_AUTHENTICATED), 0);
    ck_assert_uint_eq(stats.authenticated, 2);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(session_set_state(a, SESSION_JOINED), 0);
        ck_assert_uint_eq(stats.joined, 1);
        ck_assert_uint_eq(stats.authenticated, 2); /* joined still counts as authenticated */
        ck_assert_int_eq(session_set_state(a, SESSION_AUTHENTICATED), 0);
        ck_assert_uint_eq(stats.joined, 0);
    }
    ck_assert_int_eq(session_set_state(b, SESSION_JOINED), 0);
    ck_assert_int_eq(session_set_state(a, SESSION_JOINED), 0);
    ck_assert_uint_eq(stats.joined, 2);

    /* Closing while joined drops both gauges at once; destroy after close changes nothing. */
    ck_assert_int_eq(session_set_state(b, SESSION_CLOSED), 0);
    ck_assert_uint_eq(stats.joined, 1);
    ck_assert_uint_eq(stats.authenticated, 1);
    ck_assert(!b->authenticated && !b->document_joined);
    session_destroy(b);
    ck_assert_uint_eq(stats.joined, 1);
    ck_assert_uint_eq(stats.authenticated, 1);
    ck_assert_uint_eq(stats.active, 1);

    /* Destroy without an explicit close moves to closed first. */
    session_destroy(a);
    ck_assert_uint_eq(stats.joined, 0);
    ck_assert_uint_eq(stats.authenticated, 0);
    ck_assert_uint_eq(stats.active, 0);
    ck_assert_uint_eq(stats.peak, 2);
    ck_assert_uint_eq(stats.total, 2);
}
END_TEST

START_TEST(test_state_names)
{
    ck_assert_str_eq(session_state_name(SESSION_PENDING), "pending");
    ck_assert_str_eq(session_state_name(SESSION_AUTHENTICATED), "authenticated");
    ck_assert_str_eq(session_state_name(SESSION_JOINED), "joined");
    ck_assert_str_eq(session_state_name(SESSION_CLOSED), "closed");
    ck_assert_str_eq(session_state_name((session_state)42), "?");
}
END_TEST

/* ---- the gate ------------------------------------------------------------------------------- */

/* The seed's is_authenticated() needs the flag and a user id; broadcasts need that and joined. */
START_TEST(test_gate)
{
    session *s = new_session(NULL);
    ck_assert(!session_is_authenticated(s));
    ck_assert(!session_can_receive_broadcast(s));

    /* Authenticated state without an identity: not authenticated in the seed's sense. */
    ck_assert_int_eq(session_set_state(s, SESSION_AUTHENTICATED), 0);
    ck_assert(!session_is_authenticated(s));
    ck_assert_int_eq(session_set_state(s, SESSION_JOINED), 0);
    ck_assert(!session_can_receive_broadcast(s));

    identify(s);
    ck_assert(session_is_authenticated(s));
    ck_assert(session_can_receive_broadcast(s));

    /* Authenticated but not joined (after leave_document): no broadcasts. */
    ck_assert_int_eq(session_set_state(s, SESSION_AUTHENTICATED), 0);
    ck_assert(session_is_authenticated(s));
    ck_assert(!session_can_receive_broadcast(s));

    ck_assert_int_eq(session_set_state(s, SESSION_JOINED), 0);
    ck_assert(session_can_receive_broadcast(s));
    ck_assert_int_eq(session_set_state(s, SESSION_CLOSED), 0);
    ck_assert(!session_is_authenticated(s));
    ck_assert(!session_can_receive_broadcast(s));
    session_destroy(s);
}
END_TEST

/* An identity set while still pending (a resume in flight) opens nothing by itself. */
START_TEST(test_identity_does_not_authenticate)
{
    session *s = new_session(NULL);
    identify(s);
    ck_assert(!session_is_authenticated(s));
    ck_assert(!session_can_receive_broadcast(s));
    ck_assert_int_eq(s->state, SESSION_PENDING);
    session_destroy(s);
}
END_TEST

/* ---- identity and colors -------------------------------------------------------------------- */

static bool is_hex_color(const char *c)
{
    if (strlen(c) != 7 || c[0] != '#')
        return false;
    for (int i = 1; i < 7; i++)
        if (!isxdigit((unsigned char)c[i]))
            return false;
    return true;
}

START_TEST(test_default_color_stable_and_from_palette)
{
    /* Stable: a function of the user id only, so every node agrees. */
    ck_assert_str_eq(session_default_color("alice"), session_default_color("alice"));

    /* From a fixed palette: many ids map onto a small set of well-formed colors, and the set is
     * used (not one color for everyone). */
    const char *seen[64];
    size_t n_seen = 0;
    char id[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "user-%d", i);
        const char *c = session_default_color(id);
        ck_assert_msg(is_hex_color(c), "bad color '%s'", c);
        bool known = false;
        for (size_t k = 0; k < n_seen; k++)
            known = known || strcmp(seen[k], c) == 0;
        if (!known) {
            ck_assert_uint_lt(n_seen, 64);
            seen[n_seen++] = c;
        }
    }
    ck_assert_uint_le(n_seen, 16);
    ck_assert_uint_ge(n_seen, 8);

    /* The empty id (never valid, but it must not crash) also gets a palette color. */
    ck_assert(is_hex_color(session_default_color("")));
}
END_TEST

START_TEST(test_identity_colors)
{
    token_claims c = sample_claims();

    /* No query color, no identity color: the user's default. */
    session *s = new_session(NULL);
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", NULL, &c), 0);
    ck_assert_str_eq(s->color, session_default_color("alice"));
    ck_assert(!s->color_from_query);
    session_destroy(s);

    /* An empty query color counts as none. */
    s = new_session("");
    ck_assert(!s->color_from_query);
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", NULL, &c), 0);
    ck_assert_str_eq(s->color, session_default_color("alice"));
    session_destroy(s);

    /* An identity color (a resumed session's) is used when there is no query color. */
    s = new_session(NULL);
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", "#123456", &c), 0);
    ck_assert_str_eq(s->color, "#123456");
    session_destroy(s);

    /* The query color wins over both. */
    s = new_session("#abcdef");
    ck_assert(s->color_from_query);
    ck_assert_str_eq(s->color, "#abcdef");
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", "#123456", &c), 0);
    ck_assert_str_eq(s->color, "#abcdef");
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", NULL, &c), 0);
    ck_assert_str_eq(s->color, "#abcdef");
    session_destroy(s);
}
END_TEST

/* Re-authentication passes the session's own color back in (handlers.c does this on a token
 * refresh); the color must come out unchanged. */
START_TEST(test_identity_color_passed_back)
{
    token_claims c = sample_claims();
    session *s = new_session(NULL);
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", "#0a0b0c", &c), 0);
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice", s->color, &c), 0);
    ck_assert_str_eq(s->color, "#0a0b0c");
    session_destroy(s);
}
END_TEST

/* Every string and the claims are copied; a second identity (refresh, resume) replaces the first
 * without leaking it (LSan checks in the sanitizer build). */
START_TEST(test_identity_copies)
{
    char uid[] = "alice", uname[] = "Alice", sid[] = "0123456789abcdef0123456789abcdef";
    char doc0[] = "doc-1", doc1[] = "team-*";
    char *docs[] = {doc0, doc1};
    char cuid[] = "alice", cname[] = "Alice";
    token_claims c = {.user_id = cuid,
                      .user_name = cname,
                      .exp = 1234,
                      .has_docs = true,
                      .docs = docs,
                      .n_docs = 2};
    session *s = new_session(NULL);
    ck_assert_int_eq(session_set_identity(s, sid, uid, uname, NULL, &c), 0);

    /* Scribble over the caller's strings: the session keeps its own copies. */
    memset(uid, 'x', strlen(uid));
    memset(uname, 'x', strlen(uname));
    memset(sid, 'x', strlen(sid));
    memset(doc0, 'x', strlen(doc0));
    memset(cuid, 'x', strlen(cuid));
    ck_assert_str_eq(s->user_id, "alice");
    ck_assert_str_eq(s->user_name, "Alice");
    ck_assert_str_eq(s->session_id, "0123456789abcdef0123456789abcdef");
    ck_assert_str_eq(s->claims.user_id, "alice");
    ck_assert_int_eq(s->claims.exp, 1234);
    ck_assert(s->claims.has_docs);
    ck_assert_uint_eq(s->claims.n_docs, 2);
    ck_assert_str_eq(s->claims.docs[0], "doc-1");
    ck_assert_str_eq(s->claims.docs[1], "team-*");
    ck_assert_ptr_ne(s->claims.docs, docs);

    /* A refresh with new claims replaces the old ones. */
    token_claims fresh = {.user_id = "alice", .user_name = "Alice B.", .exp = 5678};
    ck_assert_int_eq(session_set_identity(s, "sid-1", "alice", "Alice B.", NULL, &fresh), 0);
    ck_assert_str_eq(s->user_name, "Alice B.");
    ck_assert_str_eq(s->session_id, "sid-1");
    ck_assert_int_eq(s->claims.exp, 5678);
    ck_assert(!s->claims.has_docs);
    ck_assert_uint_eq(s->claims.n_docs, 0);
    session_destroy(s);
}
END_TEST

/* ---- direct queue --------------------------------------------------------------------------- */

static msgbuf *numbered(uint32_t n)
{
    msgbuf *mb = msgbuf_from(MSGBUF_TEXT, &n, sizeof n);
    ck_assert_ptr_nonnull(mb);
    return mb;
}

static uint32_t number_of(msgbuf *mb)
{
    uint32_t n;
    memcpy(&n, msgbuf_data(mb), sizeof n);
    return n;
}

START_TEST(test_direct_queue_fifo_and_full)
{
    session *s = new_session(NULL);
    ck_assert_ptr_null(session_reply_pop(s));

    for (uint32_t i = 0; i < SESSION_DIRECT_CAP; i++)
        ck_assert_int_eq(session_reply(s, numbered(i)), 0);
    ck_assert_uint_eq(s->dq_len, 32);

    /* Full: refused, and the caller's reference is released. */
    msgbuf *extra = numbered(999);
    msgbuf_ref(extra);
    ck_assert_int_eq(session_reply(s, extra), -1);
    ck_assert_uint_eq(refs(extra), 1);
    msgbuf_unref(extra);
    ck_assert_uint_eq(s->dq_len, 32);

    /* FIFO across the wrap-around: pop some, refill, and numbers still come out in order. */
    uint32_t next_out = 0, next_in = SESSION_DIRECT_CAP;
    for (int round = 0; round < 5; round++) {
        for (int k = 0; k < 13; k++) {
            msgbuf *m = session_reply_pop(s);
            ck_assert_ptr_nonnull(m);
            ck_assert_uint_eq(number_of(m), next_out++);
            msgbuf_unref(m);
        }
        for (int k = 0; k < 13; k++)
            ck_assert_int_eq(session_reply(s, numbered(next_in++)), 0);
        ck_assert_int_eq(session_reply(s, numbered(0)), -1);
    }
    msgbuf *m;
    while ((m = session_reply_pop(s)) != NULL) {
        ck_assert_uint_eq(number_of(m), next_out++);
        msgbuf_unref(m);
    }
    ck_assert_uint_eq(next_out, next_in);
    ck_assert_uint_eq(s->dq_len, 0);
    session_destroy(s);
}
END_TEST

/* The first replies sit in the session; a longer queue moves to a heap ring, order kept even
 * when the inline slots had wrapped, and the ring is given back once the queue is empty. */
START_TEST(test_direct_queue_inline_then_heap)
{
    session *s = new_session(NULL);
    uint32_t next_out = 0, next_in = 0;
    /* Wrap the inline slots: head moves to 3. */
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(session_reply(s, numbered(next_in++)), 0);
    for (int k = 0; k < 3; k++) {
        msgbuf *m = session_reply_pop(s);
        ck_assert_uint_eq(number_of(m), next_out++);
        msgbuf_unref(m);
    }
    for (int k = 0; k < SESSION_DIRECT_INLINE; k++)
        ck_assert_int_eq(session_reply(s, numbered(next_in++)), 0);
    ck_assert_ptr_null(s->dq_heap);
    /* One more than fits inline: the heap ring, still FIFO, still capped at 32. */
    while (s->dq_len < SESSION_DIRECT_CAP)
        ck_assert_int_eq(session_reply(s, numbered(next_in++)), 0);
    ck_assert_ptr_nonnull(s->dq_heap);
    ck_assert_int_eq(session_reply(s, numbered(0)), -1);
    ck_assert_uint_eq(session_reply_load(s), SESSION_DIRECT_CAP);
    msgbuf *m;
    while ((m = session_reply_pop(s)) != NULL) {
        ck_assert_uint_eq(number_of(m), next_out++);
        msgbuf_unref(m);
    }
    ck_assert_uint_eq(next_out, next_in);
    ck_assert_ptr_null(s->dq_heap);
    /* And inline again afterwards. */
    ck_assert_int_eq(session_reply(s, numbered(7)), 0);
    ck_assert_ptr_null(s->dq_heap);
    m = session_reply_pop(s);
    ck_assert_uint_eq(number_of(m), 7);
    msgbuf_unref(m);
    session_destroy(s);
}
END_TEST

/* The document id is stored whole, whatever its length (the URL parser bounds it). */
START_TEST(test_document_id_copied)
{
    char doc[129];
    memset(doc, 'd', sizeof doc - 1);
    doc[sizeof doc - 1] = '\0';
    session *s = session_create(9, NULL, doc, NULL, &stats);
    ck_assert_ptr_nonnull(s);
    doc[0] = 'x';
    ck_assert_uint_eq(strlen(s->document_id), 128);
    ck_assert_int_eq(s->document_id[0], 'd');
    session_destroy(s);
}
END_TEST

/* Destroying a session releases what is still queued. */
START_TEST(test_direct_queue_released_on_destroy)
{
    session *s = new_session(NULL);
    msgbuf *keep[5];
    for (uint32_t i = 0; i < 5; i++) {
        keep[i] = msgbuf_ref(numbered(i));
        ck_assert_int_eq(session_reply(s, keep[i]), 0);
    }
    msgbuf_unref(session_reply_pop(s));
    session_destroy(s);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(refs(keep[i]), 1);
        msgbuf_unref(keep[i]);
    }
}
END_TEST

/* ---- rate limiter --------------------------------------------------------------------------- */

#define T0 INT64_C(5000000000) /* any monotonic microsecond value */

static const struct {
    int rate, burst;
} rates[] = {{1, 1}, {10, 20}, {100, 100}, {2000, 4000}};

/* A burst passes, then messages are limited; past ten times the rate within one second the
 * verdict turns abusive. */
START_TEST(test_rate_burst_then_limited_then_abusive)
{
    int rate = rates[_i].rate, burst = rates[_i].burst;
    session *s = new_session(NULL);
    uint64_t n = 0;
    for (; n < (uint64_t)burst; n++)
        ck_assert_int_eq(session_rate_charge(s, T0, rate, burst), RATE_OK);
    for (; n < 10 * (uint64_t)rate; n++)
        ck_assert_int_eq(session_rate_charge(s, T0, rate, burst), RATE_LIMITED);
    ck_assert_int_eq(session_rate_charge(s, T0, rate, burst), RATE_ABUSIVE);
    ck_assert_int_eq(session_rate_charge(s, T0 + 999999, rate, burst), RATE_ABUSIVE);

    /* A new one-second window starts over; tokens refilled over the second are available. */
    ck_assert_int_ne(session_rate_charge(s, T0 + 1000000, rate, burst), RATE_ABUSIVE);
    session_destroy(s);
}
END_TEST

START_TEST(test_rate_refill)
{
    const int rate = 10, burst = 20;
    session *s = new_session(NULL);
    for (int i = 0; i < burst; i++)
        ck_assert_int_eq(session_rate_charge(s, T0, rate, burst), RATE_OK);
    ck_assert_int_eq(session_rate_charge(s, T0, rate, burst), RATE_LIMITED);

    /* 50 ms at 10/s is half a token: still limited. 100 ms is one token: exactly one passes. */
    ck_assert_int_eq(session_rate_charge(s, T0 + 50000, rate, burst), RATE_LIMITED);
    ck_assert_int_eq(session_rate_charge(s, T0 + 100000, rate, burst), RATE_OK);
    ck_assert_int_eq(session_rate_charge(s, T0 + 100000, rate, burst), RATE_LIMITED);

    /* 0.3 s later: three more. */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(session_rate_charge(s, T0 + 400000, rate, burst), RATE_OK);
    ck_assert_int_eq(session_rate_charge(s, T0 + 400000, rate, burst), RATE_LIMITED);

    /* A long idle refills to the burst, never beyond it. */
    int64_t later = T0 + INT64_C(100) * 1000000;
    for (int i = 0; i < burst; i++)
        ck_assert_int_eq(session_rate_charge(s, later, rate, burst), RATE_OK);
    ck_assert_int_eq(session_rate_charge(s, later, rate, burst), RATE_LIMITED);
    session_destroy(s);
}
END_TEST

/* A client sending steadily at the rate is never limited. */
START_TEST(test_rate_steady_at_rate)
{
    const int rate = 100, burst = 100;
    session *s = new_session(NULL);
    for (int i = 0; i < 10 * rate; i++) /* ten seconds, one message every 10 ms */
        ck_assert_int_eq(session_rate_charge(s, T0 + (int64_t)i * 10000, rate, burst), RATE_OK);
    session_destroy(s);
}
END_TEST

/* Abuse is counted per window: ten times the rate spread over two windows is not abusive. */
START_TEST(test_rate_abuse_window)
{
    const int rate = 10, burst = 10;
    session *s = new_session(NULL);
    /* The first charge (at T0) starts the window; T0 + 1 s opens the next. */
    for (int i = 0; i < 10 * rate; i++)
        ck_assert_int_ne(session_rate_charge(s, T0, rate, burst), RATE_ABUSIVE);
    for (int i = 0; i < 10 * rate; i++)
        ck_assert_int_ne(session_rate_charge(s, T0 + 1000000, rate, burst), RATE_ABUSIVE);
    ck_assert_int_eq(session_rate_charge(s, T0 + 1000001, rate, burst), RATE_ABUSIVE);
    session_destroy(s);
}
END_TEST

/* ---- reassembly ----------------------------------------------------------------------------- */

START_TEST(test_rx_limit)
{
    session *s = new_session(NULL);
    const size_t max = 10000;
    uint8_t chunk[3000];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)i;

    ck_assert_int_eq(session_rx_append(s, chunk, 3000, max), 0);
    ck_assert_int_eq(session_rx_append(s, chunk, 3000, max), 0);
    ck_assert_int_eq(session_rx_append(s, chunk, 3000, max), 0);
    ck_assert_uint_eq(s->rx_len, 9000);
    /* One byte more than the limit is refused and leaves the message as it was. */
    ck_assert_int_eq(session_rx_append(s, chunk, 1001, max), -1);
    ck_assert_uint_eq(s->rx_len, 9000);
    /* Exactly up to the limit is fine. */
    ck_assert_int_eq(session_rx_append(s, chunk, 1000, max), 0);
    ck_assert_uint_eq(s->rx_len, max);
    ck_assert_int_eq(session_rx_append(s, chunk, 1, max), -1);
    for (size_t i = 0; i < 9000; i++)
        ck_assert_uint_eq(s->rx[i], (uint8_t)(i % 3000));
    ck_assert_int_eq(memcmp(s->rx + 9000, chunk, 1000), 0);

    /* Reset: the next message starts empty and the buffer is given back (an idle connection
     * holds none). */
    session_rx_reset(s);
    ck_assert_uint_eq(s->rx_len, 0);
    ck_assert_ptr_null(s->rx);
    ck_assert_uint_eq(s->rx_cap, 0);
    ck_assert_int_eq(session_rx_append(s, "ab", 2, max), 0);
    ck_assert_int_eq(memcmp(s->rx, "ab", 2), 0);
    session_rx_reset(s);

    /* A big message works the same way. */
    uint8_t *big = calloc(1, 200000);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(session_rx_append(s, big, 200000, 1 << 20), 0);
    ck_assert_uint_ge(s->rx_cap, 200000);
    session_rx_reset(s);
    ck_assert_uint_eq(s->rx_len, 0);
    ck_assert_ptr_null(s->rx);
    free(big);

    /* A single fragment over the limit is refused on an empty message too. */
    ck_assert_int_eq(session_rx_append(s, chunk, 3000, 2999), -1);
    ck_assert_uint_eq(s->rx_len, 0);
    session_destroy(s);
}
END_TEST

/* ---- small helpers -------------------------------------------------------------------------- */

START_TEST(test_close_after_flush_first_wins)
{
    session *s = new_session(NULL);
    ck_assert_int_eq(s->close_code, 0);
    session_close_after_flush(s, 4001, "authentication failed");
    session_close_after_flush(s, 1008, "rate");
    ck_assert_int_eq(s->close_code, 4001);
    ck_assert_str_eq(s->close_reason, "authentication failed");
    session_destroy(s);

    /* A reason longer than a close frame allows is cut, not overflowed. */
    char longr[200];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    s = new_session(NULL);
    session_close_after_flush(s, 1011, longr);
    ck_assert_uint_eq(strlen(s->close_reason), SESSION_CLOSE_REASON_MAX);
    ck_assert_int_eq(memcmp(s->close_reason, longr, SESSION_CLOSE_REASON_MAX), 0);
    session_destroy(s);
}
END_TEST

START_TEST(test_from_sub)
{
    session *s = new_session(NULL);
    ck_assert_ptr_eq(session_from_sub(&s->sub), s);
    session_destroy(s);
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");

    TCase *st = tcase_create("state");
    tcase_add_checked_fixture(st, setup, NULL);
    tcase_add_test(st, test_create_counts_connection);
    tcase_add_loop_test(st, test_transitions, 0, (int)(sizeof transitions / sizeof transitions[0]));
    tcase_add_test(st, test_lifecycle_gauges);
    tcase_add_test(st, test_state_names);
    tcase_add_test(st, test_gate);
    tcase_add_test(st, test_identity_does_not_authenticate);
    suite_add_tcase(s, st);

    TCase *id = tcase_create("identity");
    tcase_add_checked_fixture(id, setup, NULL);
    tcase_add_test(id, test_default_color_stable_and_from_palette);
    tcase_add_test(id, test_identity_colors);
    tcase_add_test(id, test_identity_color_passed_back);
    tcase_add_test(id, test_identity_copies);
    suite_add_tcase(s, id);

    TCase *dq = tcase_create("direct-queue");
    tcase_add_checked_fixture(dq, setup, NULL);
    tcase_add_test(dq, test_direct_queue_fifo_and_full);
    tcase_add_test(dq, test_direct_queue_released_on_destroy);
    tcase_add_test(dq, test_direct_queue_inline_then_heap);
    tcase_add_test(dq, test_document_id_copied);
    suite_add_tcase(s, dq);

    TCase *rate = tcase_create("rate");
    tcase_add_checked_fixture(rate, setup, NULL);
    tcase_add_loop_test(rate, test_rate_burst_then_limited_then_abusive, 0,
                        (int)(sizeof rates / sizeof rates[0]));
    tcase_add_test(rate, test_rate_refill);
    tcase_add_test(rate, test_rate_steady_at_rate);
    tcase_add_test(rate, test_rate_abuse_window);
    suite_add_tcase(s, rate);

    TCase *misc = tcase_create("misc");
    tcase_add_checked_fixture(misc, setup, NULL);
    tcase_add_test(misc, test_rx_limit);
    tcase_add_test(misc, test_close_after_flush_first_wins);
    tcase_add_test(misc, test_from_sub);
    suite_add_tcase(s, misc);
    return s;
}

int main(void)
{
    log_set_level(LOG_OFF); /* refused transitions log warnings by design */
    SRunner *sr = srunner_create(session_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

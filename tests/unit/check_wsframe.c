/*
 * check_wsframe.c: the client library's RFC 6455 framing and opening handshake (wsframe.h):
 * header parsing at every length boundary and every truncation, the frames a server may never
 * send, masking, the RFC's Sec-WebSocket-Accept example, and the 101 checks.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

static const uint8_t mask_key[4] = {0x12, 0x34, 0x56, 0x78};

/* Every header built for a length parses back to it, masked or not; every shorter prefix asks
 * for more bytes. */
START_TEST(test_header_round_trip_and_truncation)
{
    static const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 1ull << 32};
    uint64_t len = lens[_i / 2];
    bool masked = _i % 2;
    uint8_t buf[WSF_MAX_HEADER];
    size_t n;
    if (masked) {
        n = wsf_build_header(buf, WSF_BINARY, true, len, mask_key);
    } else {
        /* A server's header: same layout without the mask bit and key. */
        uint8_t tmp[WSF_MAX_HEADER];
        n = wsf_build_header(tmp, WSF_BINARY, true, len, mask_key) - 4;
        memcpy(buf, tmp, n);
        buf[1] &= 0x7f;
    }
    ck_assert_uint_eq(n, (len < 126 ? 2 : len < 65536 ? 4 : 10) + (masked ? 4 : 0));
    wsf_header h;
    ck_assert_int_eq(wsf_parse_header(buf, n, &h), 1);
    ck_assert(h.fin);
    ck_assert_int_eq(h.opcode, WSF_BINARY);
    ck_assert(h.masked == masked);
    ck_assert_uint_eq(h.len, len);
    ck_assert_uint_eq(h.hdr_len, n);
    if (masked)
        ck_assert_mem_eq(h.mask, mask_key, 4);
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(wsf_parse_header(buf, k, &h), 0);
}
END_TEST

START_TEST(test_forbidden_frames_are_refused)
{
    wsf_header h;
    const uint8_t rsv[] = {0x80 | 0x40 | WSF_TEXT, 0};          /* RSV1 without an extension */
    const uint8_t opcode[] = {0x80 | 0x3, 0};                   /* reserved data opcode */
    const uint8_t frag_ping[] = {WSF_PING, 0};                  /* control frame without FIN */
    const uint8_t long_ping[] = {0x80 | WSF_PING, 126, 0, 126}; /* control frame over 125 */
    const uint8_t top_bit[] = {0x80 | WSF_BINARY, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(wsf_parse_header(rsv, sizeof rsv, &h), -1);
    ck_assert_int_eq(wsf_parse_header(opcode, sizeof opcode, &h), -1);
    ck_assert_int_eq(wsf_parse_header(frag_ping, sizeof frag_ping, &h), -1);
    ck_assert_int_eq(wsf_parse_header(long_ping, sizeof long_ping, &h), -1);
    ck_assert_int_eq(wsf_parse_header(top_bit, sizeof top_bit, &h), -1);
    /* A continuation frame and an unfinished data frame are fine. */
    const uint8_t cont[] = {WSF_CONT, 3};
    ck_assert_int_eq(wsf_parse_header(cont, sizeof cont, &h), 1);
    ck_assert(!h.fin);
    ck_assert_int_eq(h.opcode, WSF_CONT);
}
END_TEST

START_TEST(test_mask_is_its_own_inverse)
{
    uint8_t data[37], orig[37];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = orig[i] = (uint8_t)(i * 7 + 1);
    wsf_mask(data, sizeof data, mask_key);
    for (size_t i = 0; i < sizeof data; i++)
        ck_assert_uint_eq(data[i], orig[i] ^ mask_key[i % 4]);
    wsf_mask(data, sizeof data, mask_key);
    ck_assert_mem_eq(data, orig, sizeof data);
}
END_TEST

/* RFC 6455 section 1.3's example. */
START_TEST(test_accept_value_matches_the_rfc)
{
    char out[29];
    wsf_accept_value("dGhlIHNhbXBsZSBub25jZQ==", out);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(test_request_has_the_upgrade_headers)
{
    char buf[512];
    int n = wsf_build_request(buf, sizeof buf, "127.0.0.1:8080", "/ws/documents/d1", "http://a",
                              "dGhlIHNhbXBsZSBub25jZQ==");
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq(strlen(buf), (size_t)n);
    ck_assert(strncmp(buf, "GET /ws/documents/d1 HTTP/1.1\r\n", 31) == 0);
    ck_assert_ptr_nonnull(strstr(buf, "\r\nHost: 127.0.0.1:8080\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nUpgrade: websocket\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nSec-WebSocket-Version: 13\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nOrigin: http://a\r\n"));
    ck_assert(n >= 4 && strcmp(buf + n - 4, "\r\n\r\n") == 0);
    n = wsf_build_request(buf, sizeof buf, "h", "/", NULL, "k");
    ck_assert_ptr_null(strstr(buf, "Origin"));
    ck_assert_int_eq(wsf_build_request(buf, 40, "h", "/", NULL, "k"), -1);
}
END_TEST

START_TEST(test_response_checks)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nupgrade:  WebSocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "\r\n\x82\x01x";
    size_t head = strlen(ok) - 3;
    unsigned status;
    char err[128];
    ck_assert_int_eq(wsf_parse_response(ok, strlen(ok), key, &status, err, sizeof err), (int)head);
    ck_assert_uint_eq(status, 101);
    for (size_t k = 0; k < head; k++)
        ck_assert_int_eq(wsf_parse_response(ok, k, key, &status, err, sizeof err), 0);

    const char *refused = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    ck_assert_int_eq(wsf_parse_response(refused, strlen(refused), key, &status, err, sizeof err),
                     -1);
    ck_assert_uint_eq(status, 400);
    ck_assert_ptr_nonnull(strstr(err, "400"));

    const char *bad_accept = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    ck_assert_int_eq(
        wsf_parse_response(bad_accept, strlen(bad_accept), key, &status, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "Sec-WebSocket-Accept"));

    const char *no_upgrade = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    ck_assert_int_eq(
        wsf_parse_response(no_upgrade, strlen(no_upgrade), key, &status, err, sizeof err), -1);

    const char *garbage = "SSH-2.0-OpenSSH\r\n\r\n";
    ck_assert_int_eq(wsf_parse_response(garbage, strlen(garbage), key, &status, err, sizeof err),
                     -1);
    ck_assert_uint_eq(status, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wsframe");
    TCase *tc = tcase_create("frames");
    tcase_add_loop_test(tc, test_header_round_trip_and_truncation, 0, 16);
    tcase_add_test(tc, test_forbidden_frames_are_refused);
    tcase_add_test(tc, test_mask_is_its_own_inverse);
    tcase_add_test(tc, test_accept_value_matches_the_rfc);
    tcase_add_test(tc, test_request_has_the_upgrade_headers);
    tcase_add_test(tc, test_response_checks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* tr_detect_sni over real ClientHellos: an OpenSSL client writes its first
 * flight into a memory BIO, the parser reads it (whole, by prefix, altered). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "detect/detect.h"

/* The ClientHello an OpenSSL client sends, with this SNI (NULL: none) and
 * maximum version. */
static size_t client_hello(const char *sni, int max_version, unsigned char *out, size_t size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    if (max_version != 0)
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    if (sni != NULL)
        assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
    SSL_set_connect_state(ssl);
    assert_true(SSL_do_handshake(ssl) <= 0); /* waits for the server */
    int n = BIO_read(wb, out, (int)size);
    assert_true(n > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static enum tr_sni_result sni(const unsigned char *p, size_t n, char *got)
{
    const char *name = (const char *)p; /* poison */
    size_t len = 999;
    enum tr_sni_result r = tr_detect_sni(p, n, &name, &len);
    if (r == TR_SNI_FOUND) {
        assert_true(len >= 1 && len <= 255);
        assert_true((const unsigned char *)name >= p && (const unsigned char *)name + len <= p + n);
        memcpy(got, name, len);
        got[len] = '\0';
    } else {
        assert_null(name);
        assert_int_equal(len, 0);
        got[0] = '\0';
    }
    return r;
}

static void test_real_hellos(void **state)
{
    (void)state;
    static unsigned char ch[TR_SNI_PEEK_MAX];
    char got[256];
    static const int versions[] = {0, TLS1_2_VERSION, TLS1_3_VERSION};
    for (size_t v = 0; v < 3; v++) {
        size_t n = client_hello("a.example.com", versions[v], ch, sizeof(ch));
        assert_int_equal(sni(ch, n, got), TR_SNI_FOUND);
        assert_string_equal(got, "a.example.com");
        /* Every proper prefix needs more: the parser waits for the record. */
        for (size_t k = 0; k < n; k++)
            if (sni(ch, k, got) != TR_SNI_NEED_MORE)
                fail_msg("version %zu prefix %zu: not NEED_MORE", v, k);
        /* Bytes after the record (the client's next flight) change nothing. */
        memset(ch + n, 0x17, 10);
        assert_int_equal(sni(ch, n + 10, got), TR_SNI_FOUND);

        n = client_hello(NULL, versions[v], ch, sizeof(ch));
        assert_int_equal(sni(ch, n, got), TR_SNI_NONE);
    }
    /* The longest name DNS allows, and the case as sent. */
    char longname[254];
    memset(longname, 'a', sizeof(longname) - 1);
    for (size_t i = 63; i < sizeof(longname) - 1; i += 64)
        longname[i] = '.';
    longname[sizeof(longname) - 1] = '\0';
    size_t n = client_hello(longname, 0, ch, sizeof(ch));
    assert_int_equal(sni(ch, n, got), TR_SNI_FOUND);
    assert_string_equal(got, longname);
    n = client_hello("Mixed.Example.COM", 0, ch, sizeof(ch));
    assert_int_equal(sni(ch, n, got), TR_SNI_FOUND);
    assert_string_equal(got, "Mixed.Example.COM");
}

/* Finds the server_name extension (type 0) in a ClientHello made by
 * client_hello; returns the offset of its type field. */
static size_t find_sni_ext(const unsigned char *ch, size_t n)
{
    size_t i = 9 + 2 + 32;
    i += 1 + ch[i];
    i += 2 + ((size_t)ch[i] << 8 | ch[i + 1]);
    i += 1 + ch[i];
    i += 2;
    while (i + 4 <= n) {
        if (ch[i] == 0 && ch[i + 1] == 0)
            return i;
        i += 4 + ((size_t)ch[i + 2] << 8 | ch[i + 3]);
    }
    fail_msg("no server_name extension");
    return 0;
}

static void test_altered(void **state)
{
    (void)state;
    static unsigned char ch[TR_SNI_PEEK_MAX], c[TR_SNI_PEEK_MAX];
    char got[256];
    size_t n = client_hello("b.example.com", 0, ch, sizeof(ch));

    /* Not TLS at all, or another record type / version. */
    assert_int_equal(sni((const unsigned char *)"GET / HTTP/1.1\r\n", 16, got), TR_SNI_NOT_TLS);
    assert_int_equal(sni((const unsigned char *)"\x17\x03\x03", 3, got), TR_SNI_NOT_TLS);
    assert_int_equal(sni((const unsigned char *)"\x16\x02", 2, got), TR_SNI_NOT_TLS);
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x05", 3, got), TR_SNI_NOT_TLS);
    assert_int_equal(sni((const unsigned char *)"\x16", 1, got), TR_SNI_NEED_MORE);
    assert_int_equal(sni((const unsigned char *)"", 0, got), TR_SNI_NEED_MORE);

    /* A record too short for a handshake header: the type is read before
     * answering, so the answer never changes with more bytes (found by
     * fuzz_client_hello). */
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x00\x00\x01", 5, got), TR_SNI_NEED_MORE);
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x00\x00\x01\x16", 6, got),
                     TR_SNI_MALFORMED);
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x00\x00\x01\x01", 6, got), TR_SNI_NONE);
    /* Record length 0 or above 2^14. */
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x01\x00\x00", 5, got), TR_SNI_MALFORMED);
    assert_int_equal(sni((const unsigned char *)"\x16\x03\x01\x40\x01", 5, got), TR_SNI_MALFORMED);
    /* Not a client_hello handshake message. */
    memcpy(c, ch, n);
    c[5] = 2;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);

    /* A handshake length that runs past the record: fragmented, read as no SNI. */
    memcpy(c, ch, n);
    c[8] = (unsigned char)(c[8] + 1);
    if (c[8] == 0)
        c[7]++;
    assert_int_equal(sni(c, n, got), TR_SNI_NONE);
    /* One shorter than the record: something trails the ClientHello. */
    memcpy(c, ch, n);
    size_t hs = (size_t)c[6] << 16 | (size_t)c[7] << 8 | c[8];
    hs--;
    c[6] = (unsigned char)(hs >> 16);
    c[7] = (unsigned char)(hs >> 8);
    c[8] = (unsigned char)hs;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);

    /* Session id longer than 32. */
    memcpy(c, ch, n);
    c[9 + 2 + 32] = 33;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);

    size_t e = find_sni_ext(ch, n);
    /* A host name with a byte that is not printable ASCII. */
    memcpy(c, ch, n);
    c[e + 4 + 5] = 'b' | 0x80;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);
    memcpy(c, ch, n);
    c[e + 4 + 5] = '\0';
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);
    /* The server_name list length one too long. */
    memcpy(c, ch, n);
    c[e + 5]++;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);
    /* Another name type (not host_name): no SNI. */
    memcpy(c, ch, n);
    c[e + 6] = 1;
    assert_int_equal(sni(c, n, got), TR_SNI_NONE);
    /* A second server_name extension: the type of the next one changed to 0. */
    memcpy(c, ch, n);
    size_t next = e + 4 + ((size_t)c[e + 2] << 8 | c[e + 3]);
    if (next + 4 <= n) {
        c[next] = 0;
        c[next + 1] = 0;
        assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);
    }
    /* The extensions' total one short. */
    memcpy(c, ch, n);
    size_t x = 9 + 2 + 32;
    x += 1 + c[x];
    x += 2 + ((size_t)c[x] << 8 | c[x + 1]);
    x += 1 + c[x];
    c[x + 1]--;
    assert_int_equal(sni(c, n, got), TR_SNI_MALFORMED);
    /* Every byte flipped in turn: never a read out of bounds (ASan), and a
     * name found is inside the record. */
    for (size_t i = 0; i < n; i++) {
        memcpy(c, ch, n);
        c[i] ^= 0xff;
        (void)sni(c, n, got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_hellos),
        cmocka_unit_test(test_altered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

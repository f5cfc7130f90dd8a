/* trellis up / trellis down: the whole mesh on one machine (src/up/,
 * docs/up.md). */
#include "cmd/cmd.h"
#include "up/up.h"

int tr_cmd_up(int argc, char **argv)
{
    return tr_up_main(argc, argv);
}

int tr_cmd_down(int argc, char **argv)
{
    return tr_down_main(argc, argv);
}

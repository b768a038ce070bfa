"""A tiny stdio MCP server for the proxy tests: every real execution appends a line to the file
named by COUNTER_FILE, so a test can count how often each tool actually ran."""

import os

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("idem-test-counter")


def _record(line: str) -> int:
    """Appends one execution line; returns how many lines the file now has."""
    path = os.environ["COUNTER_FILE"]
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


@server.tool()
def send_email(to: str, body: str) -> str:
    """Sends an email (a side effect: it must not run twice for one intent)."""
    n = _record(f"send_email {to}")
    return f"sent to {to} (execution {n})"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def read_inbox(folder: str) -> str:
    """Reads a folder: read-only, so the proxy runs it every time."""
    n = _record(f"read_inbox {folder}")
    return f"{folder}: 0 unread (execution {n})"


@server.tool()
def charge(order: str, amount: int) -> str:
    """Charges an order; fails while the file COUNTER_FILE + ".fail" exists (tool error, isError)."""
    _record(f"charge {order}")
    if os.path.exists(os.environ["COUNTER_FILE"] + ".fail"):
        raise ValueError("card declined")
    return f"charged {amount} for {order}"


@server.tool()
async def create_ticket(title: str) -> str:
    """Creates a ticket, slowly: it holds until COUNTER_FILE + ".release" exists."""
    import anyio

    n = _record(f"create_ticket {title}")
    release = os.environ["COUNTER_FILE"] + ".release"
    while not os.path.exists(release):
        await anyio.sleep(0.05)
    return f"ticket {title!r} created (execution {n})"


if __name__ == "__main__":
    server.run("stdio")

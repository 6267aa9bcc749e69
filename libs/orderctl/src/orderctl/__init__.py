"""orderctl: the operator's command line for orderflow.

`orderctl dlq ...` inspects, replays and purges dead-lettered messages; `orderctl audit`
checks that every order went through every service exactly once. The logic lives in plain
async functions (`broker`, `dead_letters`, `audit`); `cli` only parses and renders.
"""

"""Day 5: BackgroundTasks: answer the client first, then do the slow part (a welcome email).

    python -m week6_async.steps.day5_background_task
    # then in http://127.0.0.1:8006/docs, POST /signup: the 201 comes back at once,
    # and "welcome email sent" is printed two seconds later

A function given to `tasks.add_task(...)` runs after the response has been sent,
in the same process: right for work the client need not wait for (an email, an
audit log, a notification). It is not a job queue: if the process stops first, the
task is lost. Week 6's app records its audit events this way (app/audit.py).
"""

import asyncio

import uvicorn
from fastapi import BackgroundTasks
from fastapi_offline import FastAPIOffline

EMAIL_SECONDS = 2.0  # how long the pretend mail server takes
app = FastAPIOffline(title="Day 5: background tasks")
outbox: list[str] = []


async def send_welcome_email(email: str) -> None:
    await asyncio.sleep(EMAIL_SECONDS)
    outbox.append(email)
    print(f"welcome email sent to {email}")


@app.post("/signup", status_code=201)
async def sign_up(email: str, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(send_welcome_email, email)  # runs once the response has gone out
    return {"email": email, "detail": "Signed up: a welcome email is on its way"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8006)

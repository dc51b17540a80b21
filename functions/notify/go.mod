module mp3converter/functions/notify

go 1.26

module mp3converter/functions/login

go 1.26
